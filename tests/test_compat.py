"""kdtune.compat: the one home of private Ray, Optuna and torch APIs, checked against supported versions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kdtune import compat
from kdtune.errors import KdtuneError

PACKAGE = Path(__file__).resolve().parents[1] / "kdtune"


@pytest.mark.parametrize("dist", sorted(compat.SUPPORTED))
def test_an_unsupported_version_is_one_line_naming_the_range_and_the_install(monkeypatch, dist):
    low, high = compat.SUPPORTED[dist]
    compat.check_version.cache_clear()
    monkeypatch.setattr(compat.metadata, "version", lambda name: "1.0.0")
    try:
        with pytest.raises(KdtuneError) as info:
            compat.check_version(dist)
    finally:
        compat.check_version.cache_clear()
    assert str(info.value) == (f"kdtune supports {dist} >={low},<{high}, found 1.0.0; install a supported version: "
                               f"pip install '{compat.INSTALL[dist]}>={low},<{high}'")


def test_the_installed_versions_are_supported():
    compat.check_versions()
    assert all(compat.check_version(d) for d in compat.SUPPORTED)


def _private_uses(path: Path) -> list[str]:
    """``x._name`` attribute reads and ``from lib._mod import`` of ray, optuna and torch in one file."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("ray", "optuna", "torch"):
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"from {node.module}")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            name = getattr(base, "id", "")
            if name in ("ray", "optuna", "torch", "tune", "tuner", "searcher") or node.attr.startswith(("_ot_", "_local")):
                found.append(f"{name}...{node.attr}")
    return found


def test_private_apis_of_ray_optuna_and_torch_are_used_only_in_kdtune_compat():
    outside = {str(p.relative_to(PACKAGE)): _private_uses(p) for p in PACKAGE.rglob("*.py")
               if "compat" not in p.relative_to(PACKAGE).parts}
    assert {f: uses for f, uses in outside.items() if uses} == {}
    inside = [u for p in (PACKAGE / "compat").glob("*.py") for u in _private_uses(p)]
    assert "from optuna._hypervolume" in inside and "tuner..._local_tuner" in inside  # the scan sees them


def test_tunes_failed_restore_becomes_one_line_without_a_traceback():
    import logging

    compat.setup()
    logger, seen = logging.getLogger(compat.CONTROLLER_LOGGER), []
    handler = logging.Handler()
    handler.emit = seen.append  # what reaches a handler of Tune's logger (Ray may stop it propagating)
    logger.addHandler(handler)
    try:
        raise FileNotFoundError("experiment_state-2026.json\nmore detail")
    except FileNotFoundError:
        logger.exception("Failed to restore the run state.")  # as Tune's TuneController does
    finally:
        logger.removeHandler(handler)
    (record,) = seen
    assert record.getMessage() == ("could not restore the sweep's saved state (FileNotFoundError: "
                                   "experiment_state-2026.json); Tune starts it afresh")
    assert record.exc_info is None and record.exc_text is None
