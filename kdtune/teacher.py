"""The study's teacher: trained once, cached on disk under a key of its config, data and seed.

Entries live in a ``kdtune.cache`` (checksummed, atomic, locked): a damaged entry is retrained, never
loaded, and concurrent builders of the same teacher wait for the first.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kdtune.attacks import ATTACKS
from kdtune.cache import cached
from kdtune.errors import KdtuneError
from kdtune.models import build_model
from kdtune.train import fit_teacher

if TYPE_CHECKING:
    from kdtune.spec import TrainSpec
    from kdtune.data import Dataset

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Teacher:
    """A trained teacher: its model, training history, file and whether kdtune loaded it rather than training
    it; ``weights_sha256`` is the digest of a user's weights file, or of the state_dict of a teacher from MLflow
    (``kdtune.pretrained``)."""

    model: nn.Module
    history: list[dict[str, float]]
    path: Path
    from_cache: bool
    weights_sha256: str | None = None


def teacher_key(spec: TrainSpec, data: Dataset, seed: int) -> str:
    """A hash of everything that determines the trained teacher (``mlflow_model``, always None for a teacher
    kdtune trains, is left out: keys stay those of the caches written before it existed)."""
    dumped = spec.model_dump(mode="json", exclude={"mlflow_model"})
    payload = json.dumps(
        {"spec": dumped, "data": data.fingerprint(), "seed": seed, "v": CACHE_FORMAT},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def load_or_train_teacher(
    spec: TrainSpec, data: Dataset, *, seed: int, root: Path, role: str = "teacher", train: bool = True
) -> Teacher:
    """The cached teacher for (spec, data, seed) if intact, else a freshly trained (and cached) one.

    ``role`` is the study section whose settings ``spec`` holds (named in the error if training fails);
    ``train=False`` refuses to train (``kdtune report``): a missing teacher is then an error.
    """
    if spec.model is None:  # a TeacherSpec whose network comes from MLflow (kdtune.pretrained)
        raise KdtuneError(f"{role}.mlflow_model: a teacher from MLflow is loaded, never trained or cached by kdtune")
    path = root / "teachers" / f"{teacher_key(spec, data, seed)}.pt"
    torch.manual_seed(seed)  # the initialisation is part of what the key promises
    model = build_model(spec.model.name, spec.model.params, data.info).to(data.train.device)

    def fit() -> dict[str, Any]:
        if not train:
            raise KdtuneError(f"no intact {role} is cached at {path}; run the study to train it")
        adv = getattr(spec, "adversary", None)  # a TeacherSpec may ask for adversarial training
        adversary = ATTACKS.bind(adv.attack.name, adv.attack.params) if adv is not None and adv.enabled else None
        try:
            history = fit_teacher(model, data, spec, seed=seed, adversary=adversary)
        except KdtuneError as err:
            cause = str(err).split("; ")[0]
            raise KdtuneError(
                f"{role} training failed: {cause}; lower {role}.lr or change {role}.optimizer in the study file"
            ) from None
        return {"state_dict": model.state_dict(), "history": history}

    payload, from_cache = cached(path, fit, what="teacher cache")
    if from_cache:
        model.load_state_dict(payload["state_dict"])
    return Teacher(model, payload["history"], path, from_cache=from_cache)


def frozen(model: nn.Module, device: torch.device | str) -> nn.Module:
    """``model`` on ``device`` in eval mode with gradients off: a teacher is never trained further."""
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
