"""Loading a PyTorch model logged to MLflow (a teacher from the Model Registry or a run), by its URI."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdtune.errors import ConfigError
from kdtune.tracking._store import quiet_migrations
from kdtune.urls import sqlite_path

log = logging.getLogger(__name__)
def load_pytorch_model(uri: str, tracking_uri: str, *, what: str = "teacher.mlflow_model") -> Any:
    """The PyTorch model (an ``nn.Module``, on the CPU) logged at ``uri`` (``models:/<name>/<version>``,
    ``models:/<name>@<alias>``, ``runs:/<run_id>/<path>``) in the store at ``tracking_uri``, also its model
    registry. MLflow resolves ``models:/`` URIs through its process-wide tracking and registry URIs, whatever
    the client is given: they point at ``tracking_uri`` during the call only (``_store_uris``).

    MLflow's safety rules apply: a pickled model is refused unless $MLFLOW_ALLOW_PICKLE_DESERIALIZATION
    allows it, and a ``.pt2`` archive must be free of pickles; such a model comes as an ``ExportedNet``.
    Any problem is one ``ConfigError`` line naming ``what``, the URI and the fix.
    """
    from kdtune.store import redact

    store = redact(tracking_uri)
    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        raise ConfigError(f"{what}: there is no MLflow store at {store} to load {uri} from; set tracking.uri "
                          "(or MLFLOW_TRACKING_URI) to the store the teacher was logged to")
    try:
        with tempfile.TemporaryDirectory() as tmp, _store_uris(tracking_uri):
            return _load_pytorch_model(uri, tracking_uri, Path(tmp))
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - the store's and MLflow's errors are many; all are the user's to fix
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{what}: cannot load {uri} from the MLflow store {store} ({reason}); "
                          f"{_fix_for(err, reason)}") from None


def _load_pytorch_model(uri: str, tracking_uri: str, tmp: Path) -> Any:
    import mlflow.artifacts
    import mlflow.pytorch
    from mlflow.models import Model
    from torch import nn

    from kdtune.exported import ExportedNet

    quiet_migrations()
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp / "model"),
                                                     tracking_uri=tracking_uri, registry_uri=tracking_uri))
    flavors = Model.load(str(local)).flavors if (local / "MLmodel").is_file() else {}
    if "pytorch" not in flavors:
        found = f"its flavors: {', '.join(flavors)}" if flavors else "no MLmodel file there"
        raise _NotPytorch(f"not an MLflow PyTorch model ({found})")
    model = mlflow.pytorch.load_model(str(local), map_location="cpu")
    if not isinstance(model, nn.Module):
        raise _NotPytorch(f"not an MLflow PyTorch model (it loads as a {type(model).__name__})")
    archive = local / flavors["pytorch"].get("model_data", "data") / "model.pt2"
    return ExportedNet(archive.read_bytes(), model) if archive.is_file() else model


class _NotPytorch(Exception):
    """The URI holds something other than an MLflow PyTorch model."""


def _fix_for(err: Exception, reason: str) -> str:
    """The fix for a failure to load a logged model, by what went wrong."""
    if isinstance(err, _NotPytorch):
        return "log the teacher with mlflow.pytorch.log_model"
    if "pickle" in reason.lower():
        return ("log the teacher in MLflow's default pt2 format (mlflow.pytorch.log_model(model, name=..., "
                "input_example=x)), or, trusting the store, set MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true")
    if getattr(err, "error_code", "") == "RESOURCE_DOES_NOT_EXIST" or "not found" in reason or "download" in reason:
        return ("check the model's name and version or alias (or the run id and artifact path) in that store; "
                "tracking.uri (or MLFLOW_TRACKING_URI) names the store")
    return "check the URI and tracking.uri (or MLFLOW_TRACKING_URI)"


@contextlib.contextmanager
def _store_uris(uri: str) -> Iterator[None]:
    """MLflow's tracking and registry URIs set to ``uri`` (and its download progress bars off) inside the block,
    all restored after it: through the environment, and for a URI that code pinned with ``mlflow.set_*_uri``
    (which wins over the environment) through that function too."""
    import mlflow

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    environment = {name: os.environ.get(name) for name in names}
    getters = {mlflow.set_tracking_uri: mlflow.get_tracking_uri, mlflow.set_registry_uri: mlflow.get_registry_uri}
    before = {setter: get() for setter, get in getters.items()}
    os.environ.update(dict(zip(names, (uri, uri, "false"))))
    pinned = [setter for setter, get in getters.items() if get() != uri]
    for setter in pinned:
        setter(uri)
    try:
        yield
    finally:
        for setter in pinned:
            setter(before[setter])
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
