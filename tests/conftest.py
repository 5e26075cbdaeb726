"""Shared fixtures, so unit tests stay fast and each thing is built once: small in-memory data, a small
trained teacher, an empty working directory and an empty MLflow store. The base study dict is
``tests.studies.base_study()`` (a function: parametrizations need it at collection time)."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import pytest
import torch

from kdtune.data import load_dataset


def pytest_collection_finish(session):
    """Every test module is imported: freeze what exists now (torch, mlflow, ray, ...: hundreds of
    thousands of objects that live as long as the process) so that the garbage collector's full passes
    skip it. Those passes, pytest's five at exit among them, then take milliseconds, not tenths of a
    second each."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _one_thread():
    """Unit tests run single-threaded, like trials do (and so two cores are never oversubscribed)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test writes to the user's ~/.cache/kdtune."""
    monkeypatch.setenv("KDTUNE_CACHE_DIR", str(tmp_path / "kdtune-cache"))


@pytest.fixture(scope="session")
def small_data():
    """The embedded MNIST subset at a small size (600 train / 200 val / 300 test)."""
    return load_dataset("mnist_5k", {"n_train": 600, "n_val": 200, "n_test": 300})


@pytest.fixture(scope="session")
def small_teacher(small_data):
    """An MLP (784-64-10) trained for 4 epochs on ``small_data`` (~0.85 val and test accuracy), frozen:
    eval mode, no parameter gradients. Shared by the whole session: a test that changes its mode
    restores it."""
    from kdtune.config import TrainSpec
    from kdtune.models import build_model
    from kdtune.teacher import frozen
    from kdtune.train import fit_teacher

    torch.manual_seed(0)
    model = build_model("mlp", {"hidden": [64]}, small_data.info)
    spec = TrainSpec.model_validate({"model": {"name": "mlp", "hidden": [64]}, "epochs": 4, "lr": 3.0e-3})
    fit_teacher(model, small_data, spec, seed=0)
    return frozen(model, "cpu")


@pytest.fixture(scope="session")
def small_teacher_logits(small_data, small_teacher):
    """``small_teacher``'s logits on ``small_data.train.x``, (600, 10): what a study caches."""
    from kdtune.evaluate import logits_of

    return logits_of(small_teacher, small_data.train.x)


@pytest.fixture
def clean_cwd(tmp_path, monkeypatch) -> Path:
    """An empty working directory; tests assert it is still empty afterwards."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture(scope="session")
def _empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its schema and nothing else, built once: its migrations take seconds."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    root = tmp_path_factory.mktemp("mlflow-template")
    store = SqlAlchemyStore(f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri())
    store.engine.dispose()
    return root / "mlflow.db"


@pytest.fixture
def mlflow_uri(tmp_path, _empty_mlflow_db) -> str:
    """The URI of an existing, empty MLflow store at ``tmp_path / "mlflow.db"`` (a copy of one built per
    session). Tests of creating a store's schema use a path that does not exist instead."""
    shutil.copyfile(_empty_mlflow_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def study_dict() -> dict:
    """The base study of the tests as a fresh dict (``tests.studies.base_study``, which parametrizations
    that need it at collection time call directly)."""
    from tests.studies import base_study

    return base_study()
