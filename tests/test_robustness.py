"""Tests for kdtune.robustness: gradient-masking checks, AutoAttack accuracy (ART), their config and the study stages that use them."""

from __future__ import annotations

import functools

import pytest
import torch

from kdtune import attacks
from kdtune.config import AutoAttackSpec, EvaluationSpec, StudyConfig, load_study
from kdtune.errors import ConfigError
from kdtune.evaluate import accuracy, robust_accuracy
from kdtune.metrics import AA_SUBSET, autoattack_metric_names
from kdtune.metrics import trial_metric_names as metric_names
from kdtune.models import build_model
from kdtune.records import TrialRecord
from kdtune.robustness import autoattack_accuracy, masking_checks
from kdtune.study import StudyPaths, StudyRun
from kdtune.study._stored import load_students
from kdtune.study.stages import autoattack, masking
from kdtune.teacher import Teacher
from kdtune.sweep import STUDENT_FILE
from tests.studies import base_study, write_study

EPS = [0.05, 0.1, 0.2]
CLEAN = {  # a plausible, unflagged model: accuracy falls with eps, PGD <= FGSM, AutoAttack <= PGD
    "test/acc": 0.90,
    "test/robust_acc@0.05": 0.60, "test/robust_acc@0.1": 0.40, "test/robust_acc@0.2": 0.10,
    "test/fgsm_acc@0.05": 0.65, "test/fgsm_acc@0.1": 0.50, "test/fgsm_acc@0.2": 0.30,
    "test/autoattack_acc@0.1": 0.35,
    "val/robust_acc@0.2": 0.99,  # another split: not checked
}


def test_plausible_metrics_pass():
    assert masking_checks(CLEAN, EPS) == []


def test_missing_and_nan_metrics_are_skipped():
    assert masking_checks({}, EPS) == []
    assert masking_checks({**CLEAN, "test/robust_acc@0.2": float("nan"), "test/acc": float("nan")}, EPS) == []


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"test/robust_acc@0.2": 0.45}, "PGD accuracy rises with eps: test/robust_acc@0.2=0.4500 > test/robust"),
        ({"test/fgsm_acc@0.1": 0.70}, "FGSM accuracy rises with eps: test/fgsm_acc@0.1=0.7000 > test/fgsm_acc@0.05"),
        ({"test/robust_acc@0.1": 0.52}, "PGD weaker than FGSM at eps=0.1: test/robust_acc@0.1=0.5200 > test/fgsm"),
        ({"test/autoattack_acc@0.1": 0.45}, "AutoAttack weaker than PGD at eps=0.1"),
        ({"test/acc": 0.55}, "PGD accuracy above clean accuracy: test/robust_acc@0.05=0.6000 > test/acc=0.5500"),
    ],
)
def test_each_violation_is_reported_in_one_line(change, expect):
    found = masking_checks({**CLEAN, **change}, EPS)
    assert any(expect in line for line in found), found
    assert all("\n" not in line for line in found)


def test_monotonicity_skips_eps_without_a_value():
    metrics = {"test/autoattack_acc@0.05": 0.3, "test/autoattack_acc@0.2": 0.5}  # nothing at 0.1
    assert masking_checks(metrics, EPS) == [
        "AutoAttack accuracy rises with eps: test/autoattack_acc@0.2=0.5000 > test/autoattack_acc@0.05=0.3000"
    ]


@pytest.mark.parametrize(("excess", "flagged"), [(0.0, False), (0.01, False), (0.0101, True)])
@pytest.mark.parametrize(
    ("lower", "higher"),  # the second may exceed the first by at most tol
    [
        ("test/robust_acc@0.1", "test/robust_acc@0.2"),
        ("test/fgsm_acc@0.1", "test/robust_acc@0.1"),
        ("test/robust_acc@0.1", "test/autoattack_acc@0.1"),
        ("test/acc", "test/fgsm_acc@0.1"),
    ],
)
def test_tolerance_edge(lower, higher, excess, flagged):
    metrics = {lower: 0.40, higher: 0.40 + excess}  # exactly tol apart passes (float round-off forgiven)
    assert bool(masking_checks(metrics, EPS)) is flagged
    assert masking_checks(metrics, EPS, tol=0.02) == []


def test_split_selects_the_metrics():
    metrics = {"val/acc": 0.5, "val/robust_acc@0.1": 0.6}
    assert masking_checks(metrics, [0.1]) == []
    assert masking_checks(metrics, [0.1], split="val") == [
        "PGD accuracy above clean accuracy: val/robust_acc@0.1=0.6000 > val/acc=0.5000"
    ]


# ---------------------------------------------------------------- AutoAttack through ART


@pytest.fixture
def _art_home(tmp_path, monkeypatch):
    """ART writes ~/.art/config.json when first imported: keep it out of the user's home."""
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.mark.slow  # ART's AutoAttack, twice: seconds (the stage test below runs it in the unit layer)
@pytest.mark.usefixtures("_art_home")
def test_autoattack_is_at_least_as_strong_as_pgd(small_data, small_teacher):
    model, x, y = small_teacher, small_data.test.x[:64], small_data.test.y[:64]
    clean = accuracy(model, x, y)
    pgd = functools.partial(attacks.pgd, eps=0.1, steps=20, generator=torch.Generator().manual_seed(0))
    pgd_acc = robust_accuracy(model, x, y, pgd)
    model.train()
    try:
        aa = autoattack_accuracy(model, x, y, eps=0.1, n_classes=small_data.n_classes, seed=0)
        assert model.training  # the model's mode is restored
    finally:
        model.eval()  # the shared teacher's own mode
    assert clean > 0.6
    assert 0.0 <= aa <= clean
    assert aa <= pgd_acc + 0.05
    assert aa == autoattack_accuracy(model, x, y, eps=0.1, n_classes=small_data.n_classes, seed=0)  # seeded


# ---------------------------------------------------------------- config and study-stage integration



def _study(tmp_path, **sections) -> StudyConfig:
    """The base study with ``sections`` set, loaded from a study file."""
    return load_study(write_study(tmp_path / "study.yaml", base_study(**sections)))


def test_autoattack_config_validates_and_names_its_metrics(tmp_path):
    enabled = {"autoattack": {"enabled": True, "eps": [0.1, 0.2], "n_samples": 64, "members": "all"}}
    cfg = _study(tmp_path, evaluation=enabled)
    assert cfg.evaluation.autoattack == AutoAttackSpec(enabled=True, eps=[0.1, 0.2], n_samples=64, members="all")
    assert autoattack_metric_names(cfg.evaluation) == ["test/autoattack_acc@0.1", "test/autoattack_acc@0.2"]


@pytest.mark.parametrize("bad", [{"members": "some"}, {"eps": [0.0]}, {"n_samples": 0}, {"enable": True}],
                         ids=["members_some", "eps_zero", "n_samples_zero", "enable_misspelled"])
def test_bad_autoattack_config_raises(tmp_path, bad):
    with pytest.raises(ConfigError, match="autoattack"):
        _study(tmp_path, evaluation={"autoattack": bad})


def test_disabled_autoattack_leaves_metric_columns_unchanged(tmp_path):
    spec = _study(tmp_path).evaluation
    assert spec.autoattack.enabled is False
    assert autoattack_metric_names(spec) == []
    assert autoattack_metric_names(EvaluationSpec(autoattack={"eps": [0.3]})) == []
    assert metric_names(spec) + autoattack_metric_names(spec) == metric_names(spec)


@pytest.mark.usefixtures("_art_home")
def test_study_stages_attack_teacher_and_front_and_flags_every_model(tmp_path, small_data):
    cfg = _study(tmp_path, evaluation={"eps": [0.1], "autoattack": {"enabled": True, "n_samples": 16}})
    records = []
    for i, acc in enumerate([0.9, 0.5]):  # t0 is the front (one objective: val/acc)
        student = build_model("mlp", {"hidden": [16]}, small_data.info)
        (tmp_path / f"t{i}").mkdir()
        torch.save(student.state_dict(), tmp_path / f"t{i}" / STUDENT_FILE)
        metrics = {"val/acc": acc, "test/acc": 0.1, "test/robust_acc@0.1": 0.3}  # t0, t1: PGD above clean
        records.append(TrialRecord(f"t{i}", "COMPLETE", {}, metrics, checkpoint=str(tmp_path / f"t{i}" / STUDENT_FILE)))
    records.append(TrialRecord("t2", "FAILED", error="boom"))
    teacher = Teacher(build_model("mlp", {}, small_data.info), [], tmp_path, from_cache=False)
    lines: list[str] = []
    run = StudyRun(cfg, StudyPaths.of(cfg, tmp_path), echo=lines.append, data=small_data, teacher=teacher,
                   records=records, teacher_metrics={"test/acc": 1.0})
    load_students(run)
    autoattack.attack(run)
    records, teacher_metrics = run.records, run.teacher_metrics
    name = "test/autoattack_acc@0.1"
    assert 0.0 <= records[0].metrics[name] <= 1.0 and 0.0 <= teacher_metrics[name] <= 1.0
    assert name not in records[1].metrics and not records[2].metrics
    masking.check(run)
    flags = run.flags
    assert set(flags) == {"teacher", "t0", "t1"} and flags["teacher"] == []
    assert flags["t1"] == ["PGD accuracy above clean accuracy: test/robust_acc@0.1=0.3000 > test/acc=0.1000"]
    assert lines[-1] == "robustness sanity checks: 2 of 3 models flagged (t0, t1)"


@pytest.mark.parametrize(
    "subset_aa,flagged",
    [(0.455, False), (0.60, True)],  # AutoAttack vs PGD on the same images; the full split is easier/harder
)
def test_autoattack_is_checked_against_pgd_on_its_own_images(tmp_path, subset_aa, flagged):
    cfg = _study(tmp_path, evaluation={"eps": [0.1], "autoattack": {"enabled": True, "n_samples": 200}})
    metrics = {
        "test/acc": 0.95, "test/robust_acc@0.1": 0.30, "test/fgsm_acc@0.1": 0.40,  # all 1,000 test images
        "test/autoattack_acc@0.1": subset_aa,  # the first 200, which happen to be easier
        f"{AA_SUBSET}/acc": 0.99, f"{AA_SUBSET}/robust_acc@0.1": 0.46,
        f"{AA_SUBSET}/autoattack_acc@0.1": subset_aa,
    }
    run = StudyRun(cfg, StudyPaths.of(cfg, tmp_path), echo=lambda line: None,
                   records=[TrialRecord("t0", "COMPLETE", {}, metrics)], teacher_metrics={"test/acc": 1.0})
    masking.check(run)
    flags = run.flags
    if flagged:
        assert flags["t0"] == [
            "AutoAttack weaker than PGD at eps=0.1: test/autoattack_acc@0.1=0.6000 > test/robust_acc@0.1=0.4600"
            " (AutoAttack images)"
        ]
    else:
        assert flags["t0"] == []


def test_seed_repeats_autoattack_each_seed_of_a_member_autoattack_measured(monkeypatch):
    """So that the report's AutoAttack accuracy of a member is a mean ± interval over its seeds, like PGD's."""
    from types import SimpleNamespace

    import optuna

    from kdtune.config import validate_study
    from kdtune.study import _retrain

    calls = []

    def fake_retrain(run, record, *, seed, autoattack=False):
        calls.append((record.trial_id, seed, autoattack))
        return {"val/acc": 0.5, **({"test/autoattack_acc@0.1": 0.2} if autoattack else {})}

    monkeypatch.setattr(_retrain, "retrain", fake_retrain)
    cfg = validate_study(base_study(evaluation={"seeds": 3, "autoattack": {"enabled": True}}), source="s")
    run = SimpleNamespace(cfg=cfg, optuna_study=optuna.create_study())
    attacked = TrialRecord("t0", "COMPLETE", {}, {"val/acc": 0.6, "test/autoattack_acc@0.1": 0.3})
    plain = TrialRecord("t1", "COMPLETE", {}, {"val/acc": 0.6})
    runs = _retrain.seed_runs(run, attacked)
    assert [r["test/autoattack_acc@0.1"] for r in runs] == [0.3, 0.2, 0.2]
    _retrain.seed_runs(run, plain)
    assert calls == [("t0", 1, True), ("t0", 2, True), ("t1", 1, False), ("t1", 2, False)]
