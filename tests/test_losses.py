"""Tests for kdtune.losses, against by-hand float64 computations (numpy, no F.kl_div)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdtune.errors import ConfigError
from kdtune.losses import LOSSES, cross_entropy, hinton_kd


def _logits(seed: int = 0, n: int = 8, k: int = 5):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    t = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, k, (n,), generator=g)
    return s, t, y


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _by_hand(s, t, y, temperature, alpha) -> float:
    s, t, y = s.numpy(), t.numpy(), y.numpy()
    n = s.shape[0]
    p_t = _softmax(t / temperature)
    p_s = _softmax(s / temperature)
    kl = np.sum(p_t * (np.log(p_t) - np.log(p_s))) / n
    ce = -np.sum(np.log(_softmax(s)[np.arange(n), y])) / n
    return (1 - alpha) * ce + alpha * temperature**2 * kl


@pytest.mark.parametrize(("temperature", "alpha"), [(4.0, 0.9), (1.0, 0.5), (2.5, 1.0), (0.5, 0.3)])
def test_hinton_kd_matches_by_hand(temperature, alpha):
    s, t, y = _logits()
    got = hinton_kd(s, t, y, temperature=temperature, alpha=alpha)
    assert got.shape == ()
    assert got.item() == pytest.approx(_by_hand(s, t, y, temperature, alpha), rel=1e-10)


def test_defaults_are_the_papers():
    assert LOSSES.validate("hinton_kd", {}) == {"temperature": 4.0, "alpha": 0.9, "label_smoothing": 0.0}
    s, t, y = _logits(1)
    assert hinton_kd(s, t, y).item() == pytest.approx(_by_hand(s, t, y, 4.0, 0.9), rel=1e-10)


def test_alpha_zero_is_cross_entropy():
    s, t, y = _logits(2)
    ce = _by_hand(s, t, y, 1.0, 0.0)
    assert hinton_kd(s, t, y, temperature=3.0, alpha=0.0).item() == pytest.approx(ce, rel=1e-12)
    assert cross_entropy(s, None, y).item() == pytest.approx(ce, rel=1e-12)
    assert LOSSES.get("ce")(s, t, y).item() == pytest.approx(ce, rel=1e-12)


def test_high_temperature_limit_shows_t_squared_scaling():
    # Hinton et al. sec. 2.1: as T grows, T^2 * KL -> 1/(2K) * sum_k (centered t_k - centered s_k)^2.
    # Without the T^2 factor the value would be ~1e6 times smaller at T = 1000.
    s, t, y = _logits(3)
    d = (t - t.mean(1, keepdim=True)) - (s - s.mean(1, keepdim=True))
    limit = (d.pow(2).sum(1) / (2 * s.shape[1])).mean().item()
    got = hinton_kd(s, t, y, temperature=1000.0, alpha=1.0).item()
    assert got == pytest.approx(limit, rel=1e-3)


def test_identical_logits_leave_only_the_hard_term():
    s, _, y = _logits(4)
    got = hinton_kd(s, s.clone(), y, temperature=4.0, alpha=0.9).item()
    assert got == pytest.approx(0.1 * F.cross_entropy(s, y).item(), abs=1e-12)


def test_unlabeled_with_alpha_one_and_error_otherwise():
    s, t, _ = _logits(5)
    assert torch.isfinite(hinton_kd(s, t, None, alpha=1.0))
    with pytest.raises(ValueError, match="alpha"):
        hinton_kd(s, t, None, alpha=0.5)


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_is_finite_and_differentiable(name):
    s, t, y = _logits(6)
    s = s.float().requires_grad_(True)
    loss = LOSSES.bind(name, {})(s, t.float(), y)
    loss.backward()
    assert loss.shape == () and torch.isfinite(loss)
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_student_gradient_pushes_towards_teacher():
    s, t, y = _logits(7)
    s.requires_grad_(True)
    hinton_kd(s, t, y, temperature=2.0, alpha=1.0).backward()
    # d/ds of T^2 KL at temperature T is T * (softmax(s/T) - softmax(t/T)) / B.
    expected = 2.0 * (torch.softmax(s.detach() / 2, 1) - torch.softmax(t / 2, 1)) / s.shape[0]
    torch.testing.assert_close(s.grad, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({"temperature": 0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"temprature": 2}, "did you mean 'temperature'"),
    ],
)
def test_invalid_params_fail_at_validation(params, pattern):
    with pytest.raises(ConfigError, match=pattern):
        LOSSES.validate("hinton_kd", params)


def test_unknown_loss_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'hinton_kd'"):
        LOSSES.validate("hinton_dk", {})
