"""Shared fixtures: small in-memory data and a tiny trained model, so unit tests stay fast."""

from __future__ import annotations

import pytest
import torch

from kdtune.data import load_dataset


@pytest.fixture(autouse=True)
def _one_thread():
    """Unit tests run single-threaded, like trials do (and so two cores are never oversubscribed)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_data():
    """The embedded MNIST subset at a small size (600 train / 200 val / 300 test)."""
    return load_dataset("mnist_5k", {"n_train": 600, "n_val": 200, "n_test": 300})


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test writes to the user's ~/.cache/kdtune."""
    monkeypatch.setenv("KDTUNE_CACHE_DIR", str(tmp_path / "kdtune-cache"))
