"""Data-free distillation: the student trains on a synthetic transfer set made from the teacher alone.

Each method builds its transfer set once and caches it under ``ctx.cache / "datafree"``, keyed by a hash
of the teacher's weights and input normalization, the parameters that shape the set, and the seed
(temperature and alpha are left out, so trials that vary only them share one set). Writes are atomic
with a ``.sha256`` beside each file, as for the teacher cache, and a lock file makes concurrent trials
wait for the first one and then reuse its set. The set's inputs are labelled with the teacher's argmax,
and its logits on them are the soft targets.

The Lopes et al. methods read the training images exactly once per teacher, to compute the activation
statistics (``kdtune.datafree.activation_stats``), which are saved as the metadata file; the
reconstruction then loads that file and sees nothing else of the real data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import Tensor, nn

from kdtune import datafree
from kdtune.cache import cached
from kdtune.data import Split
from kdtune.errors import ConfigError
from kdtune.methods._base import METHODS, Distiller, MethodContext, SoftTargetKD
from kdtune.evaluate import logits_of

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Temperature = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Keep = Annotated[float, Field(gt=0, le=1)]
NAMES = (
    "noise", "adversarial_noise",
    "lopes_top_layer", "lopes_all_layers", "lopes_spectral_all_layers", "lopes_spectral_layer_pairs",
)  # fmt: skip


class _Synthetic(SoftTargetKD):
    """Hinton KD on a synthetic transfer set whose teacher logits were computed once."""

    def __init__(
        self, ctx: MethodContext, transfer: Split, logits: Tensor, provenance: dict[str, Any],
        *, temperature: float, alpha: float,
    ) -> None:  # fmt: skip
        super().__init__(ctx, temperature=temperature, alpha=alpha)
        self._transfer, self._logits = transfer, logits  # (N, C, H, W) + (N,), and (N, K)
        self.provenance = provenance

    def transfer_set(self) -> Split:
        return self._transfer

    def targets(self, x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
        """The teacher on the synthetic x, computed once; live on the augmented view when the recipe augments."""
        return self.teacher_logits(self._logits, idx)


# ---------------------------------------------------------------- registered methods


@METHODS.register("noise")
def noise(
    *,
    ctx: MethodContext,
    n_samples: PositiveInt = 2000,
    temperature: Temperature = 4.0,
    alpha: Fraction = 1.0,
) -> Distiller:
    """KD on uniform noise labelled by the teacher: Hinton loss on ``n_samples`` images x ~ U[0,1]^d, no real data.

    From "Data-less knowledge extraction from models?" (2020; github.com/paulvinell/Knowledge_Extraction_Noise).
    """
    shape = ctx.data.input_shape

    def make(teacher: nn.Module, gen: torch.Generator, device: torch.device) -> Tensor:
        return datafree.noise_set(n_samples, shape, generator=gen, device=device)

    return _build(ctx, "noise", {"n_samples": n_samples}, make, "nothing", temperature=temperature, alpha=alpha)


@METHODS.register("adversarial_noise")
def adversarial_noise(
    *,
    ctx: MethodContext,
    n_per_class: PositiveInt = 200,
    steps: PositiveInt = 100,
    lr: PositiveFloat = 0.05,
    temperature: Temperature = 4.0,
    alpha: Fraction = 1.0,
) -> Distiller:
    """KD on noise pushed to each class: x_c = argmax_x log p_teacher(c | x) from x ~ U[0,1]^d, then Hinton loss.

    ``steps`` Adam steps of ``lr`` on the pixels (clamped to [0, 1]), ``n_per_class`` images per class. From
    "Data-less knowledge extraction from models?" (2020; github.com/paulvinell/Knowledge_Extraction_Noise).
    """
    shape, n_classes = ctx.data.input_shape, ctx.data.n_classes

    def make(teacher: nn.Module, gen: torch.Generator, device: torch.device) -> Tensor:
        return datafree.adversarial_noise_set(
            teacher, n_per_class, n_classes, shape, steps=steps, lr=lr, generator=gen, device=device
        )

    params = {"n_per_class": n_per_class, "steps": steps, "lr": lr}
    return _build(ctx, "adversarial_noise", params, make, "nothing", temperature=temperature, alpha=alpha)


@METHODS.register("lopes_top_layer")
def lopes_top_layer(
    *, ctx: MethodContext, n_samples: PositiveInt = 2000, steps: PositiveInt = 200, lr: PositiveFloat = 0.07,
    temperature: Temperature = 4.0, alpha: Fraction = 1.0,
) -> Distiller:  # fmt: skip
    """Data-free KD from top-layer statistics (Lopes et al. 2017, arXiv:1710.07535): logits matched, then KD.

    Noise x is optimised to min ||f(x) - t||^2 with t ~ N(mean_c, std_c^2) of the teacher's per-class logits;
    the student then learns from the teacher's logits on x by Hinton KD.
    """
    return _lopes(ctx, "top_layer", n_samples, steps, lr, None, temperature=temperature, alpha=alpha)


@METHODS.register("lopes_all_layers")
def lopes_all_layers(
    *, ctx: MethodContext, n_samples: PositiveInt = 2000, steps: PositiveInt = 200, lr: PositiveFloat = 0.07,
    temperature: Temperature = 4.0, alpha: Fraction = 1.0,
) -> Distiller:  # fmt: skip
    """Data-free KD from all-layer statistics (Lopes et al. 2017, arXiv:1710.07535): every layer matched, then KD.

    Noise x is optimised so each layer's activations (after ReLU for hidden layers) match samples of that
    layer's per-class, per-unit Gaussian; the student then learns from the teacher on x by Hinton KD.
    """
    return _lopes(ctx, "all_layers", n_samples, steps, lr, None, temperature=temperature, alpha=alpha)


@METHODS.register("lopes_spectral_all_layers")
def lopes_spectral_all_layers(
    *, ctx: MethodContext, n_samples: PositiveInt = 2000, steps: PositiveInt = 200, lr: PositiveFloat = 0.07,
    spectral_keep: Keep = 0.3, temperature: Temperature = 4.0, alpha: Fraction = 1.0,
) -> Distiller:  # fmt: skip
    """Data-free KD from spectral all-layer statistics (Lopes et al. 2017, arXiv:1710.07535), then KD.

    Matched: the low-frequency graph-Fourier coefficients U^T a of all layers' activations (U: eigenvectors
    of the Laplacian of the |weight| graph; ``spectral_keep`` of the frequencies kept) to per-class samples.
    """
    return _lopes(ctx, "spectral_all_layers", n_samples, steps, lr, spectral_keep, temperature=temperature, alpha=alpha)


@METHODS.register("lopes_spectral_layer_pairs")
def lopes_spectral_layer_pairs(
    *, ctx: MethodContext, n_samples: PositiveInt = 2000, steps: PositiveInt = 200, lr: PositiveFloat = 0.07,
    spectral_keep: Keep = 0.3, temperature: Temperature = 4.0, alpha: Fraction = 1.0,
) -> Distiller:  # fmt: skip
    """Data-free KD from spectral layer-pair statistics (Lopes et al. 2017, arXiv:1710.07535), then KD.

    As ``lopes_spectral_all_layers``, with one graph per pair of consecutive layers.
    """
    return _lopes(
        ctx, "spectral_layer_pairs", n_samples, steps, lr, spectral_keep, temperature=temperature, alpha=alpha
    )


# ---------------------------------------------------------------- building and caching


MakeFn = Callable[[nn.Module, torch.Generator, torch.device], Tensor]


def _lopes(
    ctx: MethodContext, objective: str, n_samples: int, steps: int, lr: float, spectral_keep: float | None,
    *, temperature: float, alpha: float,
) -> Distiller:  # fmt: skip
    """``spectral_keep`` is None for the non-spectral objectives (their statistics have no spectra)."""
    name, teacher = f"lopes_{objective}", _teacher_of(ctx, f"lopes_{objective}")
    stats_path = _stats_path(ctx, teacher, spectral_keep=spectral_keep)

    def make(teacher: nn.Module, gen: torch.Generator, device: torch.device) -> Tensor:
        _ensure_stats(ctx, teacher, stats_path, spectral_keep=spectral_keep)
        stats = datafree.load_stats(stats_path)  # the metadata file is all the reconstruction sees
        rec = datafree.reconstruct(
            teacher, stats, objective, n_samples, steps=steps, lr=lr, generator=gen, device=device
        )
        return rec.x

    params = {"n_samples": n_samples, "steps": steps, "lr": lr, "spectral_keep": spectral_keep}
    distiller = _build(
        ctx, name, params, make, "teacher activation statistics only", temperature=temperature, alpha=alpha
    )
    distiller.provenance.update(objective=objective, metadata=str(stats_path))
    return distiller


def _teacher_of(ctx: MethodContext, name: str) -> nn.Module:
    if ctx.teacher is None:
        raise ConfigError(f"method '{name}' needs a teacher; add a teacher section to the study")
    return ctx.teacher


def _build(
    ctx: MethodContext, name: str, params: dict[str, Any], make: MakeFn, from_real_data: str,
    *, temperature: float, alpha: float,
) -> _Synthetic:  # fmt: skip
    """The cached synthetic set of ``name`` for this teacher, params and seed (made with ``make`` if absent)."""
    teacher, device = _teacher_of(ctx, name), ctx.data.train.device

    def compute() -> dict[str, Tensor]:
        x = make(teacher, torch.Generator().manual_seed(ctx.seed), device)
        return {"x": x.cpu(), "logits": logits_of(teacher, x).cpu()}

    key = _key(ctx, teacher, {"method": name, "seed": ctx.seed, **params})
    path = ctx.cache / "datafree" / f"{name}-{key}.pt"
    payload = cached(path, compute, what="data-free cache")[0]
    x, logits = payload["x"].to(device), payload["logits"].to(device)
    provenance = {
        "transfer_set": "synthetic", "method": name, "from_real_data": from_real_data, "n": len(x),
        "cache": str(path),
    }  # fmt: skip
    return _Synthetic(ctx, Split(x, logits.argmax(1)), logits, provenance, temperature=temperature, alpha=alpha)


def _stats_path(ctx: MethodContext, teacher: nn.Module, *, spectral_keep: float | None) -> Path:
    """Where the teacher's activation statistics (the metadata) live; one file per teacher and kind."""
    return ctx.cache / "datafree" / f"stats-{_key(ctx, teacher, {'spectral_keep': spectral_keep})}.pt"


def _ensure_stats(ctx: MethodContext, teacher: nn.Module, path: Path, *, spectral_keep: float | None) -> None:
    """Compute the statistics file from ``ctx.data.train`` if it is absent or corrupt: the only place a
    data-free method reads the training images."""

    def compute() -> dict[str, Any]:
        stats = datafree.activation_stats(
            teacher, ctx.data.train, spectral=spectral_keep is not None, spectral_keep=spectral_keep or 1.0
        )
        return datafree.stats_to_dict(stats)

    cached(path, compute, what="data-free cache")


def _key(ctx: MethodContext, teacher: nn.Module, params: dict[str, Any]) -> str:
    """A hash of the teacher's weights and input normalization (no images), ``params`` and the format."""
    h = hashlib.sha256()
    for k, v in sorted(teacher.state_dict().items()):
        v = v.detach().cpu().contiguous()
        h.update(f"|{k}|{v.dtype}{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    info = ctx.data.info
    meta = {"params": params, "shape": info.input_shape, "mean": info.mean, "std": info.std, "v": CACHE_FORMAT}
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()[:20]
