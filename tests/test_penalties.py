"""Tests for kdtune.penalties against torch.autograd.functional Jacobians/Hessians and closed forms."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import hessian as exact_hessian
from torch.autograd.functional import jacobian as exact_jacobian

from kdtune.errors import ConfigError
from kdtune.penalties import PENALTIES, hessian, jacobian, jacobian_norm
from tests.fresh_python import fresh_python


def _mlp(seed: int = 0, d_in: int = 784, hidden: int = 32, k: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    flat = [nn.Flatten()] if d_in == 784 else []
    return nn.Sequential(*flat, nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, k)).double()


def _batch(seed: int = 0, n: int = 4, shape=(1, 28, 28), k: int = 10):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    return x, y


def _forward(model, x):
    x = x.clone().requires_grad_(True)
    return x, model(x)


def _per_sample_sq_jacobian(model, x) -> torch.Tensor:
    j = exact_jacobian(model, x)  # (B, K, B, *x.shape[1:])
    idx = torch.arange(x.shape[0])
    return j[idx, :, idx].flatten(1).pow(2).sum(1)  # (B,) diagonal blocks


def _weight_grads(model, value):
    value.backward()
    return [p.grad for p in model.parameters() if p.dim() == 2]


def test_exact_jacobian_matches_autograd_functional():
    model, (x, y) = _mlp(), _batch()
    xr, logits = _forward(model, x)
    got = jacobian(model, xr, y, logits, estimator="exact")
    assert got.shape == ()
    torch.testing.assert_close(got, _per_sample_sq_jacobian(model, x).mean(), rtol=1e-10, atol=0)


def test_exact_jacobian_of_a_linear_model_is_the_weight_norm():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).double()
    x, y = _batch(1)
    xr, logits = _forward(model, x)
    got = jacobian(model, xr, y, logits, estimator="exact")
    torch.testing.assert_close(got, model[1].weight.detach().pow(2).sum(), rtol=1e-12, atol=0)


def test_projection_estimate_is_unbiased():
    model, (x, y) = _mlp(2), _batch(2)
    torch.manual_seed(2)
    xr, logits = _forward(model, x)
    got = jacobian(model, xr, y, logits, estimator="projection", n_projections=1000)
    expected = _per_sample_sq_jacobian(model, x).mean()
    assert got.item() == pytest.approx(expected.item(), rel=0.05)


def test_single_projections_vary_but_stay_positive():
    model, (x, y) = _mlp(3), _batch(3)
    xr, logits = _forward(model, x)
    draws = torch.stack([jacobian(model, xr, y, logits) for _ in range(20)]).detach()
    assert (draws > 0).all() and draws.std() > 0


@pytest.mark.parametrize("estimator", ["projection", "exact"])
def test_jacobian_penalty_is_differentiable(estimator):
    model, (x, y) = _mlp(4), _batch(4)
    xr, logits = _forward(model, x)
    for grad in _weight_grads(model, jacobian(model, xr, y, logits, estimator=estimator)):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["jacobian", "hessian"])
def test_a_model_blind_to_its_input_gets_zero_finite_gradients(name):
    """Every input-gradient is zero (first layer all zeros): the penalty is 0 and its parameter gradients
    are finite zeros (the squared norm is taken through one norm, whose derivative at 0 must not be NaN)."""
    model, (x, y) = _mlp(5), _batch(5)
    with torch.no_grad():
        model[1].weight.zero_()
    xr, logits = _forward(model, x)
    value = PENALTIES.bind(name, {})(model, xr, y, logits)
    assert value.item() == 0.0
    for grad in _weight_grads(model, value):
        assert torch.isfinite(grad).all() and grad.abs().sum() == 0


def test_penalty_requires_input_grad():
    model, (x, y) = _mlp(), _batch()
    with pytest.raises(ValueError, match="requires_grad_"):
        jacobian(model, x, y, model(x))


def test_jacobian_norm_matches_and_leaves_no_grads():
    model, (x, _) = _mlp(5), _batch(5)
    model.eval()
    got = jacobian_norm(model, x)
    assert got.shape == (x.shape[0],) and not got.requires_grad
    torch.testing.assert_close(got, _per_sample_sq_jacobian(model, x).sqrt(), rtol=1e-10, atol=0)
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    with torch.no_grad():  # evaluation code may hold no_grad
        torch.testing.assert_close(jacobian_norm(model, x), got)


def _per_sample_ce_hessian_sq_norm(model, x, y) -> torch.Tensor:
    norms = []
    for xi, yi in zip(x, y):
        h = exact_hessian(lambda v, yi=yi: F.cross_entropy(model(v[None]), yi[None]), xi)  # (D, D)
        norms.append(h.pow(2).sum())
    return torch.stack(norms)  # (B,)


def test_hutchinson_matches_exact_ce_hessian_of_relu_mlp():
    model = _mlp(6, d_in=6, hidden=16, k=4)
    x, y = _batch(6, n=8, shape=(6,), k=4)
    expected = _per_sample_ce_hessian_sq_norm(model, x, y).mean()
    assert expected > 0  # the softmax makes the CE Hessian of a ReLU net non-zero
    torch.manual_seed(6)
    xr, logits = _forward(model, x)
    got = hessian(model, xr, y, logits, estimator="hutchinson", n_samples=4000)
    assert got.item() == pytest.approx(expected.item(), rel=0.05)


def test_hutchinson_without_labels_uses_predictions():
    model = _mlp(7, d_in=6, hidden=16, k=4)
    x, _ = _batch(7, n=8, shape=(6,), k=4)
    y_hat = model(x).argmax(1)
    torch.manual_seed(7)
    xr, logits = _forward(model, x)
    a = hessian(model, xr, None, logits, n_samples=3)
    torch.manual_seed(7)
    b = hessian(model, xr, y_hat, logits, n_samples=3)
    torch.testing.assert_close(a, b)


class _Quadratic(nn.Module):
    """f_k(x) = 0.5 x^T A_k x: the Hessian of output k is A_k everywhere."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.einsum("bd,kde,be->bk", x, self.a, x)  # (B, K)


def _symmetric(seed: int, k: int = 3, d: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64)
    return (a + a.transpose(1, 2)) / 2


def test_finite_difference_recovers_quadratic_form_variance():
    a = _symmetric(8)
    a[1] *= 3  # make output 1 clearly the max-variance one
    model = _Quadratic(a.clone())
    # For Rademacher v: Var(v^T A v) = 2 * sum_{i != j} A_ij^2.
    off = a - torch.diag_embed(torch.diagonal(a, dim1=1, dim2=2))
    expected = (2 * off.pow(2).sum((1, 2))).max()
    x, y = _batch(8, n=16, shape=(5,), k=3)
    torch.manual_seed(8)
    xr, logits = _forward(model, x)
    got = hessian(model, xr, y, logits, estimator="finite_difference", n_samples=2000, fd_eps=0.3)
    assert got.item() == pytest.approx(expected.item(), rel=0.05)


def test_finite_difference_default_two_samples_is_unbiased():
    # One output, so no max over logits: the batch mean of a 2-sample variance estimates Var(v^T A v).
    a = _symmetric(14, k=1)
    model = _Quadratic(a.clone())
    off = a[0] - torch.diag(torch.diagonal(a[0]))
    expected = 2 * off.pow(2).sum()
    x, y = _batch(14, n=4000, shape=(5,), k=1)
    torch.manual_seed(14)
    xr, logits = _forward(model, x)
    got = hessian(model, xr, y, logits, estimator="finite_difference")
    assert got.item() == pytest.approx(expected.item(), rel=0.1)


def test_finite_difference_is_zero_for_diagonal_hessians():
    # v^T A v = trace(A) for every Rademacher v when A is diagonal: no variance.
    model = _Quadratic(torch.diag_embed(torch.randn(3, 5, dtype=torch.float64)))
    x, y = _batch(9, n=4, shape=(5,), k=3)
    xr, logits = _forward(model, x)
    got = hessian(model, xr, y, logits, estimator="finite_difference", n_samples=8)
    assert got.abs().item() < 1e-9


def test_linear_model_has_zero_finite_difference_but_nonzero_hutchinson():
    torch.manual_seed(10)
    model = nn.Sequential(nn.Linear(6, 4)).double()
    x, y = _batch(10, n=8, shape=(6,), k=4)
    xr, logits = _forward(model, x)
    fd = hessian(model, xr, y, logits, estimator="finite_difference", n_samples=4)
    assert fd.abs().item() < 1e-9
    assert hessian(model, xr, y, logits, estimator="hutchinson").item() > 1e-6


def test_finite_difference_needs_two_samples():
    model, (x, y) = _mlp(), _batch()
    xr, logits = _forward(model, x)
    with pytest.raises(ConfigError, match="n_samples >= 2"):
        hessian(model, xr, y, logits, estimator="finite_difference", n_samples=1)


def test_finite_difference_one_sample_fails_at_load_time():
    with pytest.raises(ConfigError, match=r"n_samples >= 2 .*set n_samples to 2 or more"):
        PENALTIES.validate("hessian", {"estimator": "finite_difference", "n_samples": 1})
    assert PENALTIES.validate("hessian", {"estimator": "hutchinson", "n_samples": 1})["n_samples"] == 1
    assert PENALTIES.validate("hessian", {"estimator": "finite_difference"})["n_samples"] is None


@pytest.mark.parametrize("estimator", ["hutchinson", "finite_difference"])
def test_hessian_penalty_is_differentiable(estimator):
    model, (x, y) = _mlp(11), _batch(11)
    xr, logits = _forward(model, x)
    for grad in _weight_grads(model, hessian(model, xr, y, logits, estimator=estimator)):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_finite_difference_is_differentiable_on_a_quadratic():
    model = _Quadratic(_symmetric(12))
    x, y = _batch(12, n=4, shape=(5,), k=3)
    xr, logits = _forward(model, x)
    hessian(model, xr, y, logits, estimator="finite_difference", n_samples=4).backward()
    assert torch.isfinite(model.a.grad).all() and model.a.grad.abs().sum() > 0


@pytest.mark.parametrize("name", PENALTIES.names())
def test_every_penalty_is_a_finite_differentiable_scalar(name):
    torch.manual_seed(13)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    xr, logits = _forward(model, x)
    value = PENALTIES.bind(name, {})(model, xr, y, logits)
    loss = F.cross_entropy(logits, y) + 0.1 * value
    loss.backward()
    assert value.shape == () and torch.isfinite(value) and value > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_the_exact_jacobian_norm_does_not_load_torch_fx_symbolic_shapes():
    """Every trial evaluates the Jacobian norm: done without ``grad_outputs``, it leaves torch.fx's symbolic
    shapes (sympy, 0.2 s per fresh trial process) unloaded. Checked in a fresh process."""
    lines = fresh_python("""
        import sys, torch
        from kdtune.penalties import jacobian_norm
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        norms = jacobian_norm(model, torch.rand(5, 1, 2, 2))
        print(norms.shape[0], "torch.fx.experimental.symbolic_shapes" in sys.modules)
    """)
    assert lines[-1].split() == ["5", "False"]
