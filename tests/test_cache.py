"""Tests for kdtune.cache: the one atomic writer (fsync, rename, checksum) and where caches live."""

import os
from pathlib import Path

import pytest
import torch

from kdtune import cache
from kdtune.errors import KdtuneError


def test_save_atomic_replaces_the_entry_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "students" / "abc.pt"
    cache.save_atomic(path, {"w": torch.zeros(2)}, what="student")
    cache.save_atomic(path, {"w": torch.ones(2)}, what="student")  # a retried trial writes the same file again
    torch.testing.assert_close(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert sorted(p.name for p in path.parent.iterdir()) == ["abc.pt", "abc.sha256"]
    assert cache.load_checked(path, what="student") is not None


def test_save_atomic_syncs_the_data_before_the_rename(tmp_path, monkeypatch):
    calls: list[str] = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(cache.os, "fsync", lambda fd: (calls.append("fsync"), fsync(fd))[1])
    monkeypatch.setattr(cache.os, "replace", lambda a, b: (calls.append("replace"), replace(a, b))[1])
    cache.save_atomic(tmp_path / "x.pt", {"w": torch.zeros(1)}, what="entry")
    assert calls == ["fsync", "replace"]


def test_a_failed_write_removes_the_temporary_and_says_what_to_do(tmp_path, monkeypatch):
    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.os, "fsync", full)
    with pytest.raises(KdtuneError, match=r"cannot write the student .*No space left.*KDTUNE_CACHE_DIR") as err:
        cache.save_atomic(tmp_path / "x.pt", {"w": torch.zeros(1)}, what="student")
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_an_unsavable_payload_leaves_nothing_behind(tmp_path):
    with pytest.raises(Exception):  # noqa: B017 - pickle's error type is not ours to pin
        cache.save_atomic(tmp_path / "x.pt", {"f": lambda: 0}, what="entry")
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_prefers_the_configured_path_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUNE_CACHE_DIR", str(tmp_path / "env"))
    assert cache.cache_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert cache.cache_dir(None) == tmp_path / "env"
    monkeypatch.delenv("KDTUNE_CACHE_DIR")
    assert cache.cache_dir(None) == Path("~/.cache/kdtune").expanduser().resolve()
