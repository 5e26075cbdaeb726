"""Hand-written references in plain torch: what a user writes without kdtune.

Nothing here imports kdtune. The code is written the way a competent user would write it (whole
dataset as tensors, index batches, ``F.kl_div``, ``torch.autograd.grad``, inference mode for scoring),
so the ratios measure kdtune's own overhead, not a deliberately slow reference.
Images are pixels in [0, 1]; models normalize internally, as kdtune's do.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# A step returns the loss to minimize from (model, x, y, teacher logits of the batch).
StepFn = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]


class Standardize(nn.Module):
    """(x - mean) / std with constant (1, 1, 1) buffers."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([mean]).view(1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([std]).view(1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class MLP(nn.Module):
    """Standardize, flatten, (Linear, ReLU)*, Linear: the same modules, ops and layer order as the kdtune
    models it is compared with (so a seeded init draws the same weights and a call costs the same)."""

    def __init__(self, hidden: Sequence[int], *, in_features: int = 784, n_classes: int = 10,
                 mean: float = 0.1307, std: float = 0.3081) -> None:
        super().__init__()
        self.normalize = Standardize(mean, std)
        layers: list[nn.Module] = [nn.Flatten()]  # (B, 1, 28, 28) -> (B, 784)
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.normalize(x))


# ---------------------------------------------------------------- losses, penalties, attacks


def kd_loss(s: Tensor, t: Tensor, y: Tensor, *, temperature: float = 4.0, alpha: float = 0.9) -> Tensor:
    """(1 - a) CE(s, y) + a T^2 KL(softmax(t/T) || softmax(s/T)), batch mean."""
    soft = F.kl_div(F.log_softmax(s / temperature, dim=1), F.log_softmax(t / temperature, dim=1),
                    log_target=True, reduction="batchmean")
    return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(s, y)


def input_grad(loss: Tensor, x: Tensor, *, create_graph: bool = False) -> Tensor:
    (g,) = torch.autograd.grad(loss, x, create_graph=create_graph, retain_graph=create_graph)
    return g


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    x_req = x.detach().clone().requires_grad_(True)
    g = input_grad(F.cross_entropy(model(x_req), y, reduction="sum"), x_req)
    return (x + eps * g.sign()).clamp(0, 1).detach()


def pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int,
        generator: torch.Generator | None = None) -> Tensor:
    """L-inf PGD with a random start and step 2.5 eps / steps (Madry et al.)."""
    step = 2.5 * eps / steps
    x_adv = (x + eps * (2 * torch.rand(x.shape, generator=generator) - 1)).clamp(0, 1)
    for _ in range(steps):
        x_req = x_adv.detach().requires_grad_(True)
        g = input_grad(F.cross_entropy(model(x_req), y, reduction="sum"), x_req)
        x_adv = torch.min(torch.max(x_adv + step * g.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def kd(*, temperature: float = 4.0, alpha: float = 0.9) -> StepFn:
    """The plain KD step at the given temperature and weight."""

    def step(model: nn.Module, x: Tensor, y: Tensor, t: Tensor) -> Tensor:
        return kd_loss(model(x), t, y, temperature=temperature, alpha=alpha)

    return step


kd_step = kd()


def with_live_teacher(step: StepFn, teacher: nn.Module) -> StepFn:
    """``step`` with the teacher run on every (clean) batch instead of cached logits."""

    def live(model: nn.Module, x: Tensor, y: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            t = teacher(x)  # (B, K)
        return step(model, x, y, t)

    return live


def jacobian_step(weight: float = 1e-3) -> StepFn:
    """KD + weight * K ||v^T J||^2 with one random unit v per sample (Hoffman et al. 2019)."""

    def step(model: nn.Module, x: Tensor, y: Tensor, t: Tensor) -> Tensor:
        x = x.requires_grad_(True)
        s = model(x)  # (B, K)
        v = torch.randn_like(s)
        v = v / v.norm(dim=1, keepdim=True)
        vjp = input_grad((s * v).sum(), x, create_graph=True).flatten(1)  # (B, D)
        return kd_loss(s, t, y) + weight * s.shape[1] * vjp.pow(2).sum(1).mean()

    return step


def hessian_step(weight: float = 1e-2) -> StepFn:
    """KD + weight * ||H v||^2, H the input Hessian of the CE, v Rademacher (Hutchinson)."""

    def step(model: nn.Module, x: Tensor, y: Tensor, t: Tensor) -> Tensor:
        x = x.requires_grad_(True)
        s = model(x)
        g = input_grad(F.cross_entropy(s, y, reduction="sum"), x, create_graph=True).flatten(1)  # (B, D)
        v = torch.randint(0, 2, g.shape).to(g.dtype) * 2 - 1
        hv = input_grad((g * v).sum(), x, create_graph=True).flatten(1)  # (B, D) = H_i v_i
        return kd_loss(s, t, y) + weight * hv.pow(2).sum(1).mean()

    return step


def adversarial_step(attack: Callable[[nn.Module, Tensor, Tensor], Tensor]) -> StepFn:
    """KD on attacked inputs with the clean inputs' teacher logits as targets (ARD)."""

    def step(model: nn.Module, x: Tensor, y: Tensor, t: Tensor) -> Tensor:
        return kd_loss(model(attack(model, x, y)), t, y)

    return step


# ---------------------------------------------------------------- training and evaluation


def train(model: nn.Module, x: Tensor, y: Tensor, t: Tensor, *, step: StepFn, epochs: int, batch_size: int,
          lr: float, seed: int, val: tuple[Tensor, Tensor]) -> list[tuple[float, float]]:
    """Adam over shuffled index batches; per epoch (mean loss, val accuracy)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        model.train()
        total, n = 0.0, 0
        for idx in torch.randperm(len(y), generator=gen).split(batch_size):
            loss = step(model, x[idx], y[idx], t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
        history.append((total / n, accuracy(model, *val)))
    return history


def right_mask(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> Tensor:
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(xb).argmax(1) == yb for xb, yb in zip(x.split(batch_size), y.split(batch_size))])


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    return int(right_mask(model, x, y, batch_size).sum()) / len(y)


def attacked_accuracy(model: nn.Module, x: Tensor, y: Tensor, attack: Callable[[nn.Module, Tensor, Tensor], Tensor],
                      right: Tensor, batch_size: int = 1000) -> float:
    """Share classified right both clean (``right``) and attacked (AutoAttack's count)."""
    model.eval()
    correct = 0
    for xb, yb, rb in zip(x.split(batch_size), y.split(batch_size), right.split(batch_size)):
        x_adv = attack(model, xb, yb)
        with torch.inference_mode():
            correct += int((rb & (model(x_adv).argmax(1) == yb)).sum())
    return correct / len(y)


def mean_jacobian_norm(model: nn.Module, x: Tensor, batch_size: int = 256) -> float:
    """Mean over samples of the exact ||d logits / d x_i||_F (one backward per class)."""
    model.eval()
    norms = []
    for xb in x.split(batch_size):
        xb = xb.clone().requires_grad_(True)
        s = model(xb)  # (B, K)
        sq = torch.zeros(len(xb))
        for k in range(s.shape[1]):
            (g,) = torch.autograd.grad(s[:, k].sum(), xb, retain_graph=True)  # (B, 1, H, W) = J[:, k]
            sq = sq + g.flatten(1).pow(2).sum(1)
        norms.append(sq.sqrt())
    return float(torch.cat(norms).mean())


def evaluate(model: nn.Module, splits: Mapping[str, tuple[Tensor, Tensor]], *, eps: Sequence[float],
             pgd_steps: int, n_jacobian: int, seed: int) -> dict[str, float]:
    """Clean, PGD and FGSM accuracy at each eps on each split, parameter count, Jacobian norm."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, float] = {}
    for name, (x, y) in splits.items():
        right = right_mask(model, x, y)
        out[f"{name}/acc"] = int(right.sum()) / len(y)
        for e in eps:
            out[f"{name}/pgd@{e:g}"] = attacked_accuracy(
                model, x, y, lambda m, a, b, e=e: pgd(m, a, b, e, pgd_steps, gen), right)
            out[f"{name}/fgsm@{e:g}"] = attacked_accuracy(model, x, y, lambda m, a, b, e=e: fgsm(m, a, b, e), right)
    out["params"] = float(sum(p.numel() for p in model.parameters()))
    out["jacobian"] = mean_jacobian_norm(model, splits["test"][0][:n_jacobian])
    return out


def latency_ms(models: Mapping[str, nn.Module], input_shape: Sequence[int], *, batch_sizes: Sequence[int] = (1, 256),
               warmup: int = 50, repeats: int = 5, n_calls: int = 20,
               statistic: str = "median") -> dict[str, dict[int, float]]:
    """Ms per call of each model at each batch size (``statistic``: "min", the fastest call, or "median"):
    1 thread, inference mode, warm-up, then ``repeats`` rounds timing every model in turn."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    xs = {b: torch.rand(b, *input_shape) for b in batch_sizes}
    times: dict[str, dict[int, list[float]]] = {m: {b: [] for b in xs} for m in models}
    try:
        with torch.inference_mode():
            for model in models.values():
                model.eval()
                for x in xs.values():
                    for _ in range(warmup):
                        model(x)
            for _ in range(repeats):
                for name, model in models.items():
                    for b, x in xs.items():
                        for _ in range(n_calls):
                            start = time.perf_counter()
                            model(x)
                            times[name][b].append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(before)
    pick = {"min": min, "median": statistics.median}[statistic]
    return {m: {b: pick(v) for b, v in per.items()} for m, per in times.items()}
