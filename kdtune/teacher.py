"""The study's teacher: trained once, cached on disk under a key of its config, data and seed.

A cache entry is ``<key>.pt`` (state dict + metrics, loaded with ``weights_only=True``) with a
``<key>.sha256`` beside it; an entry whose checksum does not match is retrained, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kdtune.attacks import ATTACKS
from kdtune.errors import KdtuneError
from kdtune.models import build_model
from kdtune.train import fit_teacher

if TYPE_CHECKING:
    from kdtune.config import TrainSpec
    from kdtune.data import Dataset

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Teacher:
    model: nn.Module
    history: list[dict[str, float]]
    path: Path
    from_cache: bool


def cache_dir(configured: str | None) -> Path:
    """``configured``, else $KDTUNE_CACHE_DIR, else ~/.cache/kdtune, as an absolute path."""
    raw = configured or os.environ.get("KDTUNE_CACHE_DIR") or "~/.cache/kdtune"
    return Path(raw).expanduser().resolve()


def teacher_key(spec: TrainSpec, data: Dataset, seed: int) -> str:
    """A hash of everything that determines the trained teacher."""
    payload = json.dumps(
        {"spec": spec.model_dump(mode="json"), "data": data.fingerprint(), "seed": seed, "v": CACHE_FORMAT},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def load_or_train_teacher(spec: TrainSpec, data: Dataset, *, seed: int, root: Path) -> Teacher:
    """The cached teacher for (spec, data, seed) if intact, else a freshly trained (and cached) one."""
    path = root / "teachers" / f"{teacher_key(spec, data, seed)}.pt"
    torch.manual_seed(seed)  # the initialisation is part of what the key promises
    model = build_model(spec.model.name, spec.model.params, data.info).to(data.train.x.device)
    cached = _load(path)
    if cached is not None:
        model.load_state_dict(cached["state_dict"])
        return Teacher(model, cached["history"], path, from_cache=True)
    adv = getattr(spec, "adversary", None)  # a TeacherSpec may ask for adversarial training
    adversary = ATTACKS.bind(adv.attack.name, adv.attack.params) if adv is not None and adv.enabled else None
    try:
        history = fit_teacher(model, data, spec, seed=seed, adversary=adversary)
    except KdtuneError as err:
        cause = str(err).split("; ")[0]
        raise KdtuneError(
            f"teacher training failed: {cause}; lower teacher.lr or change teacher.optimizer in the study file"
        ) from None
    _save(path, {"state_dict": model.state_dict(), "history": history})
    return Teacher(model, history, path, from_cache=False)


def frozen(model: nn.Module, device: torch.device | str) -> nn.Module:
    """``model`` on ``device`` in eval mode with gradients off: a teacher is never trained further."""
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(path: Path) -> dict[str, Any] | None:
    sums = path.with_suffix(".sha256")
    if not path.exists() or not sums.exists():
        return None
    if sums.read_text().strip() != _checksum(path):
        log.warning("teacher cache %s is corrupt (checksum mismatch); retraining it", path)
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable cache is retrained
        log.warning("teacher cache %s is unreadable (%s); retraining it", path, err)
        return None


def _save(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write never leaves a half file under the final name."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            torch.save(payload, tmp)
        os.replace(tmp.name, path)
        path.with_suffix(".sha256").write_text(_checksum(path) + "\n")
    except OSError as err:
        raise KdtuneError(
            f"cannot write the teacher cache under {path.parent} ({err.strerror}); "
            "free disk space or set output.cache / KDTUNE_CACHE_DIR to a writable directory"
        ) from None
