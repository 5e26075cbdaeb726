"""kdtune.report._drawing: PNGs drawn in a forked child land where they would have been drawn at once."""

from __future__ import annotations

import logging
import os

import pytest

from kdtune.report._drawing import Drawing, Png


def _write_pid(path, tag):
    path.write_text(f"{tag} {os.getpid()}")


def _pid_in(path):
    return int(path.read_text().split()[1])


def test_forked_pngs_are_drawn_by_a_child_and_ready_after_wait(tmp_path):
    pngs = {s: Png(tmp_path / f"{s}.png", _write_pid, (s,)) for s in ("a", "b")}
    with Drawing(pngs, fork=True) as drawing:
        assert drawing.paths == {"a": tmp_path / "a.png", "b": tmp_path / "b.png"}
        child = drawing._child
    assert all(p.read_text().startswith(s) for s, p in drawing.paths.items())
    assert {_pid_in(p) for p in drawing.paths.values()} == {child} != {os.getpid()}
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # reaped: no zombie left


def test_without_fork_the_pngs_are_drawn_at_once_here(tmp_path):
    drawing = Drawing({"a": Png(tmp_path / "a.png", _write_pid, ("a",))})
    assert _pid_in(tmp_path / "a.png") == os.getpid() and drawing.wait() == {"a": tmp_path / "a.png"}


def _fails_in_a_child(path, parent):
    if os.getpid() != parent:
        raise RuntimeError("the child cannot draw")
    _write_pid(path, "a")


def test_a_child_that_fails_leaves_its_pngs_to_the_parent(tmp_path, caplog):
    png = Png(tmp_path / "a.png", _fails_in_a_child, (os.getpid(),))
    with caplog.at_level(logging.WARNING, logger="kdtune.report._drawing"):
        paths = Drawing({"a": png}, fork=True).wait()
    assert _pid_in(paths["a"]) == os.getpid() and "drawing its figures in this one" in caplog.text


def _always_fails(path):
    raise OSError(28, "No space left on device")


def test_an_error_the_parent_meets_again_is_raised(tmp_path):
    with pytest.raises(OSError, match="No space left"):
        Drawing({"a": Png(tmp_path / "a.png", _always_fails)}, fork=True).wait()


def test_an_error_in_the_block_reaps_the_child_without_drawing(tmp_path):
    drawing = Drawing({"a": Png(tmp_path / "a.png", _fails_in_a_child, (os.getpid(),))}, fork=True)
    child = drawing._child
    with pytest.raises(KeyError), drawing:
        raise KeyError("the rest of the report failed")
    assert not (tmp_path / "a.png").exists()  # the parent drew nothing: the report is abandoned
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)
