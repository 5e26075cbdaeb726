"""Tests for kdtune.attacks: the L-inf contract, FGSM's closed form, and robust_acc <= clean_acc."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kdtune.attacks
from kdtune.attacks import ATTACKS, fgsm, pgd

EPSILONS = (0.05, 0.1, 0.2)


def _data(seed: int, n: int, prototypes: torch.Tensor):
    """Noisy copies of 10 class prototype images, in [0, 1]: (n, 1, 28, 28), (n,)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = (prototypes[y] + 0.3 * torch.randn(n, 1, 28, 28, generator=g)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="module")
def trained():
    """A small MLP trained for a few steps, and held-out data it classifies well (not perfectly)."""
    g = torch.Generator().manual_seed(0)
    prototypes = 0.5 + 0.2 * (2 * torch.rand(10, 1, 28, 28, generator=g) - 1)  # overlapping classes
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = _data(1, 512, prototypes)
    for step in range(60):
        idx = slice((step % 8) * 64, (step % 8 + 1) * 64)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
    return model, *_data(2, 256, prototypes)


def _acc(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_fixture_model_is_accurate(trained):
    model, x, y = trained
    assert 0.9 < _acc(model, x, y) < 1.0


def test_module_exposes_the_registered_functions():
    assert ATTACKS.get("fgsm") is kdtune.attacks.fgsm is fgsm
    assert ATTACKS.get("pgd") is kdtune.attacks.pgd is pgd
    assert {"fgsm", "pgd"} <= set(ATTACKS.names())


@pytest.mark.parametrize("eps", EPSILONS)
@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_stays_in_ball_and_box_and_lowers_accuracy(trained, name, eps):
    model, x, y = trained
    x_adv = ATTACKS.get(name)(model, x, y, eps=eps)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max().item() <= eps + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    robust, clean = _acc(model, x_adv, y), _acc(model, x, y)
    assert robust <= clean
    assert robust < clean - 0.2  # the attack does something at these radii


@pytest.mark.parametrize("eps", EPSILONS)
def test_fgsm_is_one_signed_gradient_step(trained, eps):
    model, x, y = trained
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
    expected = torch.clamp(x + eps * grad.sign(), 0, 1)
    torch.testing.assert_close(fgsm(model, x, y, eps=eps), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("eps", EPSILONS)
def test_pgd_at_least_as_strong_as_fgsm(trained, eps):
    model, x, y = trained
    g = torch.Generator().manual_seed(0)
    robust_pgd = _acc(model, pgd(model, x, y, eps=eps, alpha=None, steps=10, generator=g), y)
    robust_fgsm = _acc(model, fgsm(model, x, y, eps=eps), y)
    assert robust_pgd <= robust_fgsm + 0.02


def test_pgd_default_step_size_reaches_the_ball_edge(trained):
    # alpha = 2.5 * eps / steps lets PGD without random start move most pixels to +-eps.
    model, x, y = trained
    x_adv = pgd(model, x, y, eps=0.1, alpha=None, steps=4, random_start=False)
    moved = (x_adv - x).abs()
    interior = (x > 0.1) & (x < 0.9)
    assert (moved[interior] > 0.1 - 1e-6).float().mean() > 0.5


@pytest.mark.parametrize("name", ATTACKS.names())
@pytest.mark.parametrize("training", [True, False])
def test_attack_has_no_side_effects(trained, name, training):
    model, x, y = trained
    model = nn.Sequential(*model, nn.Dropout(0.0))  # shares the trained parameters
    model.train(training)
    first = next(model.parameters())
    first.grad = torch.full_like(first, 0.5)
    x_before = x.clone()
    ATTACKS.get(name)(model, x, y, eps=0.1)
    assert all(m.training is training for m in model.modules())
    assert torch.equal(first.grad, torch.full_like(first, 0.5))
    assert all(p.grad is None for p in list(model.parameters())[1:])
    assert torch.equal(x, x_before)
    first.grad = None


@pytest.mark.parametrize("name", ATTACKS.names())
def test_works_under_no_grad(trained, name):
    model, x, y = trained
    with torch.no_grad():
        x_adv = ATTACKS.get(name)(model, x[:32], y[:32], eps=0.1)
    assert (x_adv != x[:32]).any()


def test_eps_zero_is_identity(trained):
    model, x, y = trained
    assert torch.equal(fgsm(model, x, y, eps=0.0), x)
    assert torch.equal(pgd(model, x, y, eps=0.0, alpha=None, steps=5), x)
    assert torch.equal(pgd(model, x, y, eps=0.0, alpha=0.01, steps=5, random_start=True), x)


def test_pgd_is_reproducible_with_a_generator(trained):
    model, x, y = trained

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return pgd(model, x, y, eps=0.1, alpha=0.02, steps=3, random_start=True, generator=g)

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_pgd_without_random_start_is_deterministic(trained):
    model, x, y = trained
    a = pgd(model, x, y, eps=0.1, alpha=0.02, steps=3, random_start=False)
    b = pgd(model, x, y, eps=0.1, alpha=0.02, steps=3, random_start=False)
    assert torch.equal(a, b)
