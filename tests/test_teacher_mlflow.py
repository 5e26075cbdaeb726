"""A teacher logged to MLflow (``teacher: {mlflow_model: URI}``): loaded by its registry and run URIs from a
real local store, fed as its preprocessing says, its digest stable, and every bad URI one line (exit 2)."""

from __future__ import annotations

import copy
import os
import pickle
import re
import shutil
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from kdtune import cli
from kdtune.config import load_study, validate_study, with_overrides
from kdtune.errors import ConfigError
from kdtune.models import MODELS
from kdtune.pretrained import load_from_mlflow, state_sha256
from kdtune.teacher import frozen
from tests.studies import base_study, write_study

REGISTRY_URI = "models:/my-teacher/1"


class Logged:
    """A teacher logged to an MLflow store by a user: ``net`` (the original) under ``run_id``/``teacher``,
    registered as ``my-teacher`` version 1; ``notes`` a run artifact that is not a model."""

    def __init__(self, uri: str, net: nn.Module, run_id: str) -> None:
        self.uri, self.net, self.run_id = uri, net, run_id
        self.run_uri = f"runs:/{run_id}/teacher"
        self.notes_uri = f"runs:/{run_id}/notes.txt"


@pytest.fixture(scope="module")
def logged(tmp_path_factory, _empty_mlflow_db) -> Logged:
    """A small trained MLP logged with ``mlflow.pytorch.log_model`` as a user does (MLflow's fluent API, its
    default pt2 format), into a store of its own; MLflow's process-wide state is restored afterwards."""
    import mlflow
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("teacher-store")
    shutil.copyfile(_empty_mlflow_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    torch.manual_seed(5)
    net = MODELS.build("mlp", hidden=[16], input_shape=(1, 28, 28), n_classes=10)
    _train_a_few_steps(net)
    client = MlflowClient(uri)
    experiment = client.create_experiment("teachers", artifact_location=(root / "artifacts").as_uri())
    (root / "notes.txt").write_text("not a model")
    with pytest.MonkeyPatch.context() as patch:  # the environment, not set_tracking_uri: restored at the end
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.pytorch.log_model(net, name="teacher", registered_model_name="my-teacher",
                                     input_example=np.random.default_rng(0).random((2, 1, 28, 28), np.float32),
                                     pip_requirements=[])  # not inferred nor checked: that takes seconds
            mlflow.log_artifact(str(root / "notes.txt"))
    return Logged(uri, net.eval(), run.info.run_id)


def _train_a_few_steps(net: nn.Module) -> None:
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()


def _teacher_spec(logged: Logged, model_uri: str, **teacher: Any):
    return validate_study(base_study(teacher={"mlflow_model": model_uri, **teacher},
                                     tracking={"uri": logged.uri}), source="test").teacher


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("which", ["registry", "run"])
def test_a_teacher_is_loaded_by_its_registry_or_run_uri_as_logged(logged, small_data, which):
    model_uri = REGISTRY_URI if which == "registry" else logged.run_uri
    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")}
    teacher = load_from_mlflow(_teacher_spec(logged, model_uri), small_data, tracking_uri=logged.uri)
    x = small_data.test.x[:7]
    with torch.no_grad():
        torch.testing.assert_close(teacher.model(x), logged.net(x))  # pixels in [0, 1], no normalization added
    assert teacher.weights_sha256 == state_sha256(logged.net) and teacher.history == []
    assert {k: os.environ.get(k) for k in before} == before  # MLflow's process-wide settings are left alone


def test_tracking_and_registry_uris_pinned_in_code_are_restored(logged, small_data, tmp_path, monkeypatch):
    """A user's code may have pinned MLflow's URIs (mlflow.set_tracking_uri wins over the environment)."""
    import mlflow

    other = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)  # restored by monkeypatch whatever happens below
    mlflow.set_tracking_uri(other)
    try:
        load_from_mlflow(_teacher_spec(logged, REGISTRY_URI), small_data, tracking_uri=logged.uri)
        assert mlflow.get_tracking_uri() == other and mlflow.get_registry_uri() == other
        assert os.environ["MLFLOW_TRACKING_URI"] == other and "MLFLOW_REGISTRY_URI" not in os.environ
    finally:
        mlflow.set_tracking_uri(None)  # unpinned again, as the other tests expect
    assert not (tmp_path / "other.db").exists()


def test_the_digest_is_stable_across_loads_and_changes_with_the_weights(logged, small_data):
    first = load_from_mlflow(_teacher_spec(logged, REGISTRY_URI), small_data, tracking_uri=logged.uri)
    again = load_from_mlflow(_teacher_spec(logged, logged.run_uri), small_data, tracking_uri=logged.uri)
    assert first.weights_sha256 == again.weights_sha256 and re.fullmatch(r"[0-9a-f]{64}", first.weights_sha256)
    changed = copy.deepcopy(logged.net)
    with torch.no_grad():
        changed[1].bias[0] += 1.0e-6
    assert state_sha256(changed) != first.weights_sha256


def test_the_preprocessing_is_applied_as_for_weights(logged, small_data):
    pre = {"pixel_max": 255.0, "mean": [33.0], "std": [78.0]}
    teacher = load_from_mlflow(_teacher_spec(logged, REGISTRY_URI, preprocessing=pre), small_data,
                               tracking_uri=logged.uri)
    x = small_data.test.x[:5]
    with torch.no_grad():
        torch.testing.assert_close(teacher.model(x), logged.net((x * 255 - 33) / 78))


def test_the_loaded_teacher_is_frozen_pickled_and_copied_as_ray_and_the_stages_do(logged, small_data):
    """The exported graph refuses eval() and pickling by itself: a study freezes the teacher and Ray ships it."""
    teacher = load_from_mlflow(_teacher_spec(logged, REGISTRY_URI), small_data, tracking_uri=logged.uri)
    model = frozen(teacher.model, "cpu")
    x = small_data.test.x[:4]
    expected = logged.net(x).detach()
    for other in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        torch.testing.assert_close(frozen(other, "cpu")(x), expected)
    x = x.clone().requires_grad_(True)  # attacks and the Jacobian norm differentiate through it
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ---------------------------------------------------------------- bad URIs: one line, exit code 2


@pytest.mark.parametrize("model_uri,expected", [
    ("models:/my-teacher/7", r"cannot load models:/my-teacher/7 from the MLflow store .*not found.*; check the "
                             r"model's name and version"),
    ("models:/nobody/1", r"cannot load models:/nobody/1 .*; check the model's name and version"),
    ("runs:/0123456789abcdef0123456789abcdef/teacher", r"cannot load runs:/0123.*; check the model's name"),
    ("NOTES", r"cannot load runs:/\w+/notes.txt from .* \(not an MLflow PyTorch model \(no MLmodel file there\)\); "
              r"log the teacher with mlflow.pytorch.log_model"),
])
def test_a_uri_that_does_not_load_is_one_config_error_line(logged, small_data, model_uri, expected):
    model_uri = logged.notes_uri if model_uri == "NOTES" else model_uri
    with pytest.raises(ConfigError, match=r"^teacher.mlflow_model: " + expected) as info:
        load_from_mlflow(_teacher_spec(logged, model_uri), small_data, tracking_uri=logged.uri)
    assert "\n" not in str(info.value) and info.value.exit_code == 2


def test_a_store_that_does_not_exist_is_named_and_not_created(logged, small_data, tmp_path):
    uri = f"sqlite:///{tmp_path / 'nowhere.db'}"
    with pytest.raises(ConfigError, match=r"there is no MLflow store at sqlite:///.*nowhere.db to load "
                                          r"models:/my-teacher/1 from; set tracking.uri"):
        load_from_mlflow(_teacher_spec(logged, REGISTRY_URI), small_data, tracking_uri=uri)
    assert not (tmp_path / "nowhere.db").exists()


def test_a_model_for_other_inputs_is_one_line(logged):
    from kdtune.data import load_dataset

    digits = load_dataset("digits", {})  # 8x8 images: the logged MLP takes 28x28
    with pytest.raises(ConfigError, match=r"^teacher.mlflow_model models:/my-teacher/1 does not run on the study's "
                                          r"inputs of shape \(1, 8, 8\) \(.*\); log a model for this data") as info:
        load_from_mlflow(_teacher_spec(logged, REGISTRY_URI), digits, tracking_uri=logged.uri)
    assert "\n" not in str(info.value)


def test_a_model_for_other_classes_is_one_line(logged, tmp_path):
    from kdtune.data import load_dataset

    rng = np.random.default_rng(0)
    images = {f"x_{s}": rng.integers(0, 256, (30, 1, 28, 28), dtype=np.uint8) for s in ("train", "test")}
    np.savez(tmp_path / "three.npz", **images, **{f"y_{s}": np.arange(30) % 3 for s in ("train", "test")})
    three_classes = load_dataset("arrays", {"path": str(tmp_path / "three.npz")})
    with pytest.raises(ConfigError, match=r"gives outputs of shape \(2, 10\) for 2 inputs, where the dataset's 3 "
                                          r"classes need logits of shape \(2, 3\)"):
        load_from_mlflow(_teacher_spec(logged, REGISTRY_URI), three_classes, tracking_uri=logged.uri)


def test_kdtune_run_stops_at_an_unknown_version_with_one_line_before_anything_is_written(
        logged, tmp_path, monkeypatch, capsys):
    workdir = tmp_path / "work"
    workdir.mkdir()
    path = write_study(workdir / "study.yaml", base_study(
        dataset={"name": "mnist_5k", "n_train": 60, "n_val": 20, "n_test": 20},
        teacher={"mlflow_model": "models:/my-teacher/7"}, tracking={"uri": logged.uri}))
    monkeypatch.chdir(workdir)
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kdtune: error: teacher.mlflow_model: cannot load "
                                                   "models:/my-teacher/7"), err
    assert sorted(p.name for p in workdir.iterdir()) == ["study.yaml"]  # no study record, no MLflow run


# ---------------------------------------------------------------- the study file


def test_a_study_with_a_teacher_from_mlflow_validates_and_keeps_it_through_overrides(tmp_path):
    raw = base_study(teacher={"mlflow_model": "models:/my-teacher@champion",
                              "preprocessing": {"mean": [0.5], "std": [0.25]}})
    cfg = load_study(write_study(tmp_path / "study.yaml", raw))
    assert cfg.teacher.model is None and cfg.teacher.mlflow_model == "models:/my-teacher@champion"
    assert cfg.teacher.pretrained and cfg.teacher.preprocessing.std == [0.25]
    again = with_overrides(cfg, {"method.temperature": 3.0})  # what every trial's config goes through
    assert again.teacher == cfg.teacher


@pytest.mark.parametrize("teacher,expected", [
    ({"mlflow_model": "models:/t/1", "weights": "teacher.pt"},
     "teacher: weights and mlflow_model are two sources of the teacher's weights; give one of them"),
    ({"mlflow_model": "models:/t/1", "model": {"name": "mlp"}}, "teacher: give one of model: {name: ...}"),
    ({"model": None}, "teacher: give one of model: {name: ...}"),
    ({"mlflow_model": "models:/t/1", "adversary": {"attack": {"name": "fgsm", "eps": 0.1}}},
     "teacher: a teacher loaded from mlflow_model is never trained; remove adversary or mlflow_model"),
    ({"mlflow_model": "models:/t/1", "weights_key": "state"}, "teacher: weights_key and preprocessing describe"),
    ({"mlflow_model": "s3://bucket/teacher"},
     "teacher.mlflow_model: expected models:/<name>/<version>, models:/<name>@<alias> or runs:/<run_id>/<path>"),
    ({"mlflow_model": "runs:/only-a-run-id"}, "teacher.mlflow_model: expected models:/<name>/<version>"),
])
def test_a_bad_teacher_from_mlflow_is_refused_at_load_with_one_line(tmp_path, teacher, expected):
    path = write_study(tmp_path / "study.yaml", base_study(teacher=teacher))
    with pytest.raises(ConfigError) as info:
        load_study(path)
    assert expected in str(info.value) and "\n" not in str(info.value) and info.value.exit_code == 2


# ---------------------------------------------------------------- a whole study


@pytest.mark.slow  # a whole study through Ray, Optuna and MLflow in a fresh process
def test_a_study_distils_from_a_teacher_in_the_registry_and_records_it(logged, tmp_path):
    """The study's own store (the default, in its working directory) holds the registered teacher."""
    from mlflow.tracking import MlflowClient

    project = tmp_path / "project"
    project.mkdir()
    shutil.copyfile(logged.uri.removeprefix("sqlite:///"), project / "mlflow.db")  # artifacts stay where they are
    path = write_study(project / "study.yaml", base_study(
        name="from_mlflow", dataset={"name": "mnist_5k", "n_train": 200, "n_val": 100, "n_test": 100},
        teacher={"mlflow_model": REGISTRY_URI}, student={"model": {"name": "mlp", "hidden": [8]}, "epochs": 1},
        evaluation={"eps": [0.1], "pgd_steps": 2, "fgsm": False, "n_jacobian": 8,
                    "latency": {"batch_sizes": [1], "warmup": 1, "repeats": 1, "n_calls": 2}},
        search={"space": {"method.alpha": {"type": "categorical", "choices": [0.5, 0.9]}},
                "objectives": [{"metric": "val/acc", "mode": "max"}], "sampler": {"name": "grid"},
                "max_concurrent": 1},
        resources={"checkpoint_every_s": 0}))
    env = {**os.environ, "KDTUNE_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "kdtune", str(path)], cwd=project, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert done.returncode == 0, done.stdout
    digest = state_sha256(logged.net)
    assert f"teacher loaded from MLflow {REGISTRY_URI} (state_dict sha256 {digest})" in done.stdout
    assert "2/2 trials complete" in done.stdout, done.stdout
    report = (project / "reports" / "from_mlflow" / "report.md").read_text(encoding="utf-8")
    assert f"MLflow model {REGISTRY_URI} (state_dict sha256 {digest})" in report
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("from_mlflow")
    parent = client.search_runs([experiment.experiment_id], filter_string="tags.kind = 'sweep'")[0]
    assert parent.data.params["teacher.mlflow_model"] == REGISTRY_URI
    assert parent.data.params["teacher.weights_sha256"] == digest
    again = subprocess.run([sys.executable, "-m", "kdtune", "report", str(path)], cwd=project, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert again.returncode == 0 and f"state_dict sha256 {digest}" in again.stdout, again.stdout
    trial_id = re.search(r"kdtune rerun \S+ (\w+)", report).group(1)
    rerun = subprocess.run([sys.executable, "-m", "kdtune", "rerun", str(path), trial_id], cwd=project, env=env,
                           text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert rerun.returncode == 0 and f"state_dict sha256 {digest}" in rerun.stdout, rerun.stdout
