"""A user's trained teacher: its weights loaded into its model, never trained by kdtune.

``teacher: {model: {...}, weights: teacher.pt}`` takes a ``state_dict`` file, or a checkpoint holding one
under ``weights_key``, loaded with ``torch.load(weights_only=True)``. The teacher sees its inputs as its
owner trained it: ``preprocessing`` (pixel range, mean/std) or, by default, pixels in [0, 1] as they are;
kdtune's own normalization never wraps a user's weights.

``teacher: {mlflow_model: "models:/my-teacher/3"}`` (or ``runs:/<run_id>/<path>``) takes a PyTorch model
logged to MLflow (``kdtune.tracking.load_pytorch_model``), fed the same way; its digest is that of its
state_dict (``state_sha256``), so a registered version whose weights change is noticed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdtune.data import Dataset
from kdtune.errors import ConfigError
from kdtune.exported import ExportedNet
from kdtune.models import MODELS
from kdtune.spec import PreprocessingSpec, TeacherSpec
from kdtune.teacher import Teacher

_SHOWN = 3  # keys named in a mismatch message


class Preprocessed(nn.Module):
    """``net(((x * pixel_max) - mean) / std)``: pixels in [0, 1] in, as the weights' owner fed them."""

    def __init__(self, net: nn.Module, spec: PreprocessingSpec | None) -> None:
        super().__init__()
        self.net = net
        spec = spec or PreprocessingSpec()
        self.pixel_max = spec.pixel_max
        channels = len(spec.mean) if spec.mean else 1
        self.register_buffer("mean", torch.tensor(spec.mean or [0.0] * channels).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std or [1.0] * channels).view(-1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x * self.pixel_max - self.mean) / self.std)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_pretrained(spec: TeacherSpec, data: Dataset, *, workdir: Path) -> Teacher:
    """The teacher ``spec.model`` with the weights at ``spec.weights`` (relative to ``workdir``); a file
    that is missing, unreadable or does not fit the model raises one ``ConfigError`` line."""
    path = (workdir / str(spec.weights)).resolve()
    if not path.is_file():
        raise ConfigError(f"teacher.weights: no file at {path}; give the path of the teacher's saved state_dict "
                          "(relative to the working directory)")
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a corrupt or pickled-object file is the user's to fix
        raise ConfigError(f"teacher.weights: cannot load {path} with weights_only=True ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:160] if str(err) else ''}); save it with "
                          "torch.save(model.state_dict(), path)") from None
    state = _state_dict(payload, spec.weights_key, path)
    net = MODELS.build(spec.model.name, **spec.model.params, input_shape=tuple(data.input_shape),
                       n_classes=data.n_classes)
    _check_fit(net, state, spec, path)
    net.load_state_dict(state)
    model = Preprocessed(net, spec.preprocessing).to(data.train.device)
    return Teacher(model, [], path, from_cache=True, weights_sha256=sha256_of(path))


def load_from_mlflow(spec: TeacherSpec, data: Dataset, *, tracking_uri: str) -> Teacher:
    """The network logged to MLflow at ``spec.mlflow_model`` (in the store at ``tracking_uri``), fed as
    ``spec.preprocessing`` says; a model that cannot be loaded or does not fit the data raises one
    ``ConfigError`` line."""
    from kdtune.tracking import load_pytorch_model

    uri = str(spec.mlflow_model)
    net = load_pytorch_model(uri, tracking_uri, what="teacher.mlflow_model")
    model = Preprocessed(net, spec.preprocessing)
    _check_outputs(model, data, uri)
    logged = net.net if isinstance(net, ExportedNet) else net  # the digest of the network as its owner logged it
    return Teacher(model.to(data.train.device), [], Path(uri), from_cache=True, weights_sha256=state_sha256(logged))


def state_sha256(net: nn.Module) -> str:
    """sha256 of ``net``'s state_dict: each entry's name, dtype, shape and bytes, in the order of the names."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)  # (N,)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def _check_outputs(model: nn.Module, data: Dataset, uri: str) -> None:
    """One line if the model does not map two of the study's inputs to (2, n_classes) logits."""
    x = data.train.head(2).x.cpu()  # (2, C, H, W)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:  # noqa: BLE001 - whatever the user's graph raises is theirs to fix
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ConfigError(f"teacher.mlflow_model {uri} does not run on the study's inputs of shape "
                          f"{tuple(x.shape[1:])} ({reason}); log a model for this data, with an input_example "
                          "of two or more images") from None
    if not isinstance(out, Tensor) or tuple(out.shape) != (2, data.n_classes):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ConfigError(f"teacher.mlflow_model {uri} gives outputs of shape {got} for 2 inputs, where "
                          f"the dataset's {data.n_classes} classes need logits of shape (2, {data.n_classes})")


def _state_dict(payload: Any, key: str | None, path: Path) -> dict[str, Tensor]:
    if key is not None:
        if not isinstance(payload, dict) or key not in payload:
            keys = sorted(payload)[:8] if isinstance(payload, dict) else []
            raise ConfigError(f"teacher.weights_key: {path} has no key '{key}' (it has: {', '.join(map(str, keys))}); "
                              "name the key that holds the state_dict")
        payload = payload[key]
    if not isinstance(payload, dict) or not all(isinstance(v, Tensor) for v in payload.values()):
        hint = [k for k in ("state_dict", "model", "model_state_dict") if isinstance(payload, dict) and k in payload]
        fix = f"set teacher.weights_key: {hint[0]}" if hint else "save it with torch.save(model.state_dict(), path)"
        raise ConfigError(f"teacher.weights: {path} does not hold a state_dict of tensors; {fix}")
    return payload


def _check_fit(net: nn.Module, state: dict[str, Tensor], spec: TeacherSpec, path: Path) -> None:
    """One line naming the first missing, unexpected and mismatched keys, if ``state`` does not fit ``net``."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in the model"
              for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = [f"{what} {', '.join(keys[:_SHOWN])}" + (f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if keys]
    if problems:
        raise ConfigError(f"teacher.weights {path.name} does not fit teacher.model '{spec.model.name}': "
                          f"{'; '.join(problems)}; give the model (and its parameters) the weights were saved from")
