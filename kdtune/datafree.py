"""Synthetic transfer sets for data-free distillation: noise, adversarial noise, activation statistics.

Pure functions: the device is passed in, randomness comes from a seeded ``torch.Generator`` (images are
drawn on the generator's device, then moved), and the teacher is only run, never trained. Two families:

* ``noise_set`` and ``adversarial_noise_set``: nothing from the real data is used ("Data-less knowledge
  extraction from models?", 2020 blog post; code github.com/paulvinell/Knowledge_Extraction_Noise).
* Lopes et al. 2017 (arXiv:1710.07535): ``activation_stats`` summarises the teacher's activations on its
  training data (the only real-data artefact, saved as ``stats_to_dict``), and ``reconstruct`` optimises
  noise until the teacher's activations match samples drawn from that summary.

Layers are named modules of the teacher (``net.<i>`` for kdtune MLPs); by default every ``nn.Linear`` but
the last. The logits are always the top layer, named ``"logits"``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdtune.compat.optim import LeanAdam

if TYPE_CHECKING:
    from kdtune.data import AnySplit

LOGITS = "logits"
OBJECTIVES = ("top_layer", "all_layers", "spectral_all_layers", "spectral_layer_pairs")
STATS_FORMAT = 1


# ---------------------------------------------------------------- noise (no real data at all)


def noise_set(n: int, input_shape: Sequence[int], *, generator: torch.Generator, device: torch.device | str) -> Tensor:
    """``n`` images of i.i.d. uniform [0, 1) pixels, shape (n, C, H, W)."""
    return torch.rand((n, *input_shape), generator=generator, device=generator.device).to(device)


def adversarial_noise_set(
    teacher: nn.Module,
    n_per_class: int,
    n_classes: int,
    input_shape: Sequence[int],
    *,
    steps: int = 100,
    lr: float = 0.05,
    generator: torch.Generator,
    device: torch.device | str,
    batch_size: int = 1024,
) -> Tensor:
    """Noise pushed to every class: x_i = argmax_{x in [0,1]^d} log p_teacher(c_i | x), from uniform noise.

    Adam on the pixels, projected to [0, 1] after each step; ``n_per_class`` images per class, row i
    targeting class ``i // n_per_class``. Shape (n_per_class * n_classes, C, H, W).
    """
    teacher.eval()
    classes = torch.arange(n_classes, device=device).repeat_interleave(n_per_class)  # (N,)
    start = noise_set(len(classes), input_shape, generator=generator, device=device)

    def loss(x: Tensor, idx: Tensor) -> Tensor:  # summed over the chunk: -sum_i log p(c_i | x_i)
        return F.cross_entropy(teacher(x), classes[idx], reduction="sum")

    x, _ = _descend(start, loss, steps=steps, lr=lr, batch_size=batch_size)
    return x


def _descend(
    start: Tensor, loss: Callable[[Tensor, Tensor], Tensor], *, steps: int, lr: float, batch_size: int
) -> tuple[Tensor, list[float]]:
    """Minimise ``loss(x_chunk, idx)`` (a per-example sum) over the inputs with Adam, clamping them to
    [0, 1] after each step; chunks are optimised independently. Returns x and the per-example mean loss
    before each step and after the last one (steps + 1 values)."""
    done, totals = [], torch.zeros(steps + 1, dtype=torch.float64)
    for idx in torch.arange(len(start), device=start.device).split(batch_size):
        x = start[idx].clone().requires_grad_(True)
        opt = LeanAdam([x], lr=lr)
        for step in range(steps):
            value = loss(x, idx)
            x.grad = torch.autograd.grad(value, x)[0]  # only the inputs: the teacher's weights get no grad
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            totals[step] += float(value.detach())
        with torch.no_grad():
            totals[steps] += float(loss(x, idx))
        done.append(x.detach())
    return torch.cat(done), (totals / max(1, len(start))).tolist()


# ---------------------------------------------------------------- activation statistics (Lopes et al.)


@dataclass(frozen=True)
class Spectrum:
    """Graph-Fourier statistics of a group of consecutive layers (``kind`` "all" or "pair").

    The group's units are the nodes of a graph whose edges are the |weights| of the nn.Linear layers
    joining them; ``basis`` holds the Laplacian's eigenvectors of the k lowest graph frequencies, and
    the statistics are those of the coefficients ``basis^T a`` of the group's activations a.
    """

    kind: str
    layers: tuple[int, ...]  # indices into TeacherStats.layers
    basis: Tensor  # (D, k), D = total width of the group
    mean: Tensor  # (K, k) per-class mean coefficients
    std: Tensor  # (K, k)


@dataclass(frozen=True)
class TeacherStats:
    """Per-class, per-unit mean and std of the teacher's activations on its training data.

    ``layers`` runs bottom to top and ends with ``"logits"``, so ``mean[-1]`` (K, K) holds the per-class
    mean logits (the top-layer statistics). Hidden layers hold raw module outputs (pre-ReLU for Linear).
    """

    layers: tuple[str, ...]
    n_classes: int
    input_shape: tuple[int, ...]  # (C, H, W)
    counts: Tensor  # (K,) examples per class
    mean: tuple[Tensor, ...]  # per layer, (K, D_l)
    std: tuple[Tensor, ...]  # per layer, (K, D_l)
    spectra: tuple[Spectrum, ...] = ()

    def spectra_of(self, kind: str) -> tuple[Spectrum, ...]:
        return tuple(s for s in self.spectra if s.kind == kind)

    def to(self, device: torch.device | str) -> TeacherStats:
        spectra = tuple(
            replace(s, basis=s.basis.to(device), mean=s.mean.to(device), std=s.std.to(device)) for s in self.spectra
        )
        mean, std = tuple(m.to(device) for m in self.mean), tuple(s.to(device) for s in self.std)
        return replace(self, counts=self.counts.to(device), mean=mean, std=std, spectra=spectra)


def default_layers(teacher: nn.Module) -> tuple[str, ...]:
    """The hidden fully connected layers: every nn.Linear but the last (which gives the logits)."""
    names = [name for name, m in teacher.named_modules() if isinstance(m, nn.Linear)]
    return tuple(names[:-1])


@contextmanager
def _tapped(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """While active, the outputs of the named modules, flattened to (B, D), by name."""
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ValueError(f"the teacher has no module named {', '.join(missing)}; it has {', '.join(modules)}")
    seen: dict[str, Tensor] = {}

    def recorder(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, output: Tensor) -> None:
            seen[name] = output.flatten(1)  # (B, ...) -> (B, D)

        return hook

    handles = [modules[name].register_forward_hook(recorder(name)) for name in layers]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _activations(teacher: nn.Module, x: Tensor, hidden: Sequence[str]) -> list[Tensor]:
    """The hidden layers' outputs, then the logits: a list of (B, D_l)."""
    with _tapped(teacher, hidden) as seen:
        logits = teacher(x)  # (B, K)
    return [seen[name] for name in hidden] + [logits]


def _signal(acts: Sequence[Tensor]) -> list[Tensor]:
    """What the next layer sees: hidden outputs after a ReLU (as in Lopes et al.'s code), logits as they are."""
    return [F.relu(a) for a in acts[:-1]] + [acts[-1]]


def _linear_weights(teacher: nn.Module, hidden: Sequence[str], widths: Sequence[int]) -> list[Tensor]:
    """W_l (D_{l+1}, D_l) joining layer l to layer l+1: the weight of the nn.Linear producing layer l+1."""
    modules = dict(teacher.named_modules())
    linears = [m for m in modules.values() if isinstance(m, nn.Linear)]
    producers = [modules[name] for name in hidden[1:]] + [linears[-1] if linears else None]
    weights = []
    for l, m in enumerate(producers):
        if not isinstance(m, nn.Linear) or m.weight.shape != (widths[l + 1], widths[l]):
            raise ValueError(
                "spectral statistics need every layer to be an nn.Linear fed directly by the previous one "
                f"(layers {list(hidden)} + logits); use top_layer or all_layers for this teacher"
            )
        weights.append(m.weight.detach().double().abs())
    return weights


def _laplacian_basis(weights: Sequence[Tensor], widths: Sequence[int], keep: float) -> Tensor:
    """The eigenvectors of the k = ceil(keep * D) smallest eigenvalues of L = diag(A 1) - A, where A is the
    block adjacency of consecutive layers with edge weights |W|; shape (D, k), D = sum(widths)."""
    starts = [0, *torch.tensor(widths).cumsum(0).tolist()]
    adj = torch.zeros(starts[-1], starts[-1], dtype=torch.float64)  # (D, D)
    for l, w in enumerate(weights):
        rows, cols = slice(starts[l + 1], starts[l + 2]), slice(starts[l], starts[l + 1])
        adj[rows, cols] = w.cpu()  # (D_{l+1}, D_l)
        adj[cols, rows] = w.cpu().T
    _, vectors = torch.linalg.eigh(torch.diag(adj.sum(1)) - adj)  # ascending eigenvalues
    return vectors[:, : max(1, math.ceil(keep * starts[-1]))].float()


def _spectral_bases(
    teacher: nn.Module, hidden: Sequence[str], widths: Sequence[int], keep: float
) -> list[tuple[str, tuple[int, ...], Tensor]]:
    """(kind, layer indices, basis) for all layers together ("all") and each consecutive pair ("pair")."""
    weights = _linear_weights(teacher, hidden, widths)
    groups = [("all", tuple(range(len(widths))))] + [("pair", (l, l + 1)) for l in range(len(widths) - 1)]
    return [
        (kind, members, _laplacian_basis(weights[members[0] : members[-1]], [widths[m] for m in members], keep))
        for kind, members in groups
    ]


def _coefficients(signal: Sequence[Tensor], members: Sequence[int], basis: Tensor) -> Tensor:
    """Graph-Fourier coefficients of the member layers' signals: (B, sum D_m) @ (sum D_m, k) -> (B, k)."""
    return torch.cat([signal[m] for m in members], 1) @ basis.to(signal[0].device)


@torch.no_grad()
def _labelled_batches(x: Tensor | AnySplit, labels: Tensor | None, size: int) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(x, labels) batches in order: of a tensor and its ``labels`` (or None), or of a split and its own labels."""
    if not isinstance(x, Tensor):
        return ((xb, yb) for xb, yb, _ in x.batches(size))
    return ((x[i : i + size], None if labels is None else labels[i : i + size]) for i in range(0, len(x), size))


def activation_stats(
    teacher: nn.Module,
    x: Tensor | AnySplit,
    *,
    layers: Sequence[str] | None = None,
    labels: Tensor | None = None,
    spectral: bool = False,
    spectral_keep: float = 0.3,
    batch_size: int = 1000,
) -> TeacherStats:
    """Per-class mean and std (population) of each unit of each layer of ``teacher`` on ``x`` (N, C, H, W).

    Classes are ``labels`` (N,) if given (a split ``x``, in memory or streamed, brings its own), else the
    teacher's predictions. With ``spectral`` also the graph-Fourier statistics (see ``Spectrum``) of all
    layers together and of each pair, keeping ``spectral_keep`` of each graph's frequencies. Lopes et al. 2017.
    """
    hidden = default_layers(teacher) if layers is None else tuple(layers)
    teacher.eval()
    groups: list[tuple[str, tuple[int, ...], Tensor]] | None = None
    sums: list[Tensor] = []  # per signal, (2, K, D): per-class sum and sum of squares, float64
    for xb, yb in _labelled_batches(x, labels, batch_size):
        acts = _activations(teacher, xb, hidden)  # [(B, D_l)]
        if groups is None:
            widths = [a.shape[1] for a in acts]
            groups = _spectral_bases(teacher, hidden, widths, spectral_keep) if spectral else []
        n_classes = acts[-1].shape[1]
        y = acts[-1].argmax(1) if yb is None else yb
        onehot = F.one_hot(y, n_classes).double().T  # (K, B)
        signals = [torch.ones_like(acts[-1][:, :1]), *acts]  # a column of ones counts the examples
        signals += [_coefficients(_signal(acts), members, basis) for _, members, basis in groups]
        moments = [torch.stack([onehot @ v.double(), onehot @ v.double().square()]) for v in signals]
        sums = moments if not sums else [a + b for a, b in zip(sums, moments)]
    counts = sums[0][0, :, 0]  # (K,)
    n = counts.clamp(min=1)[:, None]  # (K, 1)
    means = [(t[0] / n).float() for t in sums[1:]]
    stds = [(t[1] / n - (t[0] / n).square()).clamp(min=0).sqrt().float() for t in sums[1:]]
    k = len(hidden) + 1
    spectra = tuple(
        Spectrum(kind, members, basis.cpu(), means[k + j], stds[k + j])
        for j, (kind, members, basis) in enumerate(groups)
    )
    shape = tuple(x.shape[1:]) if isinstance(x, Tensor) else tuple(x.input_shape)
    return TeacherStats((*hidden, LOGITS), n_classes, shape, counts.long(), tuple(means[:k]), tuple(stds[:k]), spectra)


def stats_to_dict(stats: TeacherStats) -> dict[str, Tensor | str]:
    """``stats`` as plain CPU tensors plus a JSON description (loadable with ``weights_only=True``)."""
    meta = {
        "format": STATS_FORMAT,
        "layers": list(stats.layers),
        "n_classes": stats.n_classes,
        "input_shape": list(stats.input_shape),
        "spectra": [{"kind": s.kind, "layers": list(s.layers)} for s in stats.spectra],
    }
    payload: dict[str, Tensor | str] = {"meta": json.dumps(meta), "counts": stats.counts.cpu()}
    for l, (m, s) in enumerate(zip(stats.mean, stats.std)):
        payload[f"mean.{l}"], payload[f"std.{l}"] = m.cpu(), s.cpu()
    for j, sp in enumerate(stats.spectra):
        for field_name in ("basis", "mean", "std"):
            payload[f"spectrum.{j}.{field_name}"] = getattr(sp, field_name).cpu()
    return payload


def stats_from_dict(payload: dict[str, Tensor | str]) -> TeacherStats:
    """The inverse of ``stats_to_dict``."""
    meta = json.loads(payload["meta"])
    if meta.get("format") != STATS_FORMAT:
        raise ValueError(f"statistics format {meta.get('format')}, expected {STATS_FORMAT}")
    n_layers = len(meta["layers"])
    spectra = tuple(
        Spectrum(s["kind"], tuple(s["layers"]), *(payload[f"spectrum.{j}.{f}"] for f in ("basis", "mean", "std")))
        for j, s in enumerate(meta["spectra"])
    )
    return TeacherStats(
        tuple(meta["layers"]), meta["n_classes"], tuple(meta["input_shape"]), payload["counts"],
        tuple(payload[f"mean.{l}"] for l in range(n_layers)), tuple(payload[f"std.{l}"] for l in range(n_layers)),
        spectra,
    )  # fmt: skip


def load_stats(path: Path | str) -> TeacherStats:
    """The statistics saved (as ``stats_to_dict``) at ``path``, on the CPU."""
    return stats_from_dict(torch.load(path, map_location="cpu", weights_only=True))


# ---------------------------------------------------------------- reconstruction from statistics


@dataclass(frozen=True)
class Reconstruction:
    """Optimised inputs (N, C, H, W) in [0, 1], the class each was drawn for (N,), and the objective's
    per-example mean before each step and after the last one."""

    x: Tensor
    classes: Tensor
    losses: tuple[float, ...]


def _targets(stats: TeacherStats, objective: str) -> list[tuple[Tensor, Tensor]]:
    """The (mean, std) pairs, each (K, D), that ``objective`` matches."""
    if objective == "top_layer":
        return [(stats.mean[-1], stats.std[-1])]
    if objective == "all_layers":
        return list(zip(stats.mean, stats.std))
    kind = "all" if objective == "spectral_all_layers" else "pair"
    spectra = stats.spectra_of(kind)
    if not spectra:
        raise ValueError(f"objective '{objective}' needs statistics computed with spectral=True and >= 2 layers")
    return [(s.mean, s.std) for s in spectra]


def _objective(acts: list[Tensor], targets: list[Tensor], stats: TeacherStats, objective: str) -> Tensor:
    """Sum over examples of the mean squared error between what ``objective`` compares and its targets."""
    if objective == "top_layer":
        pairs = [(acts[-1], targets[0])]  # logits vs sampled logits
    elif objective == "all_layers":
        pairs = list(zip(_signal(acts), _signal(targets)))  # ReLU on hidden layers, on both sides
    else:
        sig, spectra = _signal(acts), stats.spectra_of("all" if objective == "spectral_all_layers" else "pair")
        pairs = [(_coefficients(sig, s.layers, s.basis), t) for s, t in zip(spectra, targets)]
    return sum((a - t).square().mean(1).sum() for a, t in pairs)  # each (B, D) -> scalar


def reconstruct(
    teacher: nn.Module,
    stats: TeacherStats,
    objective: str,
    n: int,
    *,
    steps: int = 200,
    lr: float = 0.07,
    generator: torch.Generator,
    device: torch.device | str,
    batch_size: int = 512,
) -> Reconstruction:
    """Inputs whose teacher activations match samples from ``stats`` (Lopes et al. 2017, arXiv:1710.07535).

    Each of ``n`` examples gets a class c (equal numbers over the classes seen) and a target t ~ N(mean_c,
    std_c^2) (diagonal) of what ``objective`` compares: ``top_layer`` the logits, ``all_layers`` every
    layer (after a ReLU for hidden ones), ``spectral_*`` the graph-Fourier coefficients of all layers /
    of each consecutive pair. Uniform noise is then moved by Adam (clamped to [0, 1]) to minimise
    sum_groups mean_units (a - t)^2.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective '{objective}'; known: {', '.join(OBJECTIVES)}")
    teacher.eval()
    stats, on_device = stats.to("cpu"), stats.to(device)
    present = torch.nonzero(stats.counts > 0).flatten()
    classes = present[torch.arange(n) % len(present)]  # (n,)
    targets = []
    for mean, std in _targets(stats, objective):
        eps = torch.randn((n, mean.shape[1]), generator=generator, device=generator.device).cpu()
        targets.append((mean[classes] + std[classes] * eps).to(device))  # (n, D)
    start = noise_set(n, stats.input_shape, generator=generator, device=device)
    hidden = stats.layers[:-1]

    def loss(x: Tensor, idx: Tensor) -> Tensor:
        return _objective(_activations(teacher, x, hidden), [t[idx] for t in targets], on_device, objective)

    x, losses = _descend(start, loss, steps=steps, lr=lr, batch_size=batch_size)
    return Reconstruction(x, classes.to(device), tuple(losses))
