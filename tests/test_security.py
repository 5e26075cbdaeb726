"""Study files are data, checkpoints are tensors, and secrets in storage URLs stay out of logs and runs."""

import ast
from pathlib import Path

import pytest
import yaml

from kdtune.config import load_study
from kdtune.errors import KdtuneError
from kdtune.study.stages.start import _parent_params as _flatten_top
from kdtune.store import open_study, redact

PACKAGE = Path(__file__).parent.parent / "kdtune"


def test_every_torch_load_is_weights_only():
    """torch.load unpickles arbitrary objects unless weights_only=True: every call in kdtune sets it."""
    calls = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((path.name, keywords.get("weights_only")))
    assert calls, "the scan found no torch.load at all"
    assert all(value == "True" for _, value in calls), calls


def test_yaml_is_only_ever_read_safely():
    unsafe = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
                loader = {k.arg: ast.unparse(k.value) for k in node.keywords}.get("Loader", "")
                if "Unique" not in loader and "Safe" not in loader:
                    unsafe.append(path.name)
    assert not unsafe


def test_passwords_are_redacted():
    assert redact("postgresql://kd:s3cret@db:5432/kd") == "postgresql://kd:***@db:5432/kd"
    assert redact("sqlite:////tmp/optuna.db") == "sqlite:////tmp/optuna.db"


def test_an_unreachable_storage_error_does_not_show_its_password():
    with pytest.raises(KdtuneError) as err:
        open_study("postgresql://kd:s3cret@127.0.0.1:1/kd", "x", ["maximize"])
    assert "s3cret" not in str(err.value) and "kd:***@127.0.0.1" in str(err.value)


def test_the_sweep_run_does_not_log_passwords(tmp_path):
    raw = yaml.safe_load((Path(__file__).parent.parent / "studies" / "smoke.yaml").read_text())
    raw["tracking"] = {"uri": "postgresql://ml:t0ps3cret@db/mlflow"}
    raw["output"] = {"optuna": "postgresql://kd:s3cret@db/optuna"}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    params = _flatten_top(load_study(path))
    assert not any("s3cret" in v or "t0ps3cret" in v for v in params.values())
    assert "ml:***@db" in params["tracking"] and "kd:***@db" in params["output"]
