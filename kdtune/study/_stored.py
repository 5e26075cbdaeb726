"""What a study has stored: its Optuna study, its trials' records, their students and the teacher."""

from __future__ import annotations

import torch
from torch import nn

from kdtune import store
from kdtune.augment import check_images
from kdtune.config import with_overrides
from kdtune.data import load_dataset
from kdtune.evaluate import evaluate_model
from kdtune.feasibility import majority_rate
from kdtune.metrics import acc
from kdtune.models import build_model
from kdtune.pretrained import load_from_mlflow, load_pretrained
from kdtune.records import TrialRecord
from kdtune.spec import StudyConfig
from kdtune.study._run import StudyRun
from kdtune.teacher import frozen, load_or_train_teacher
from kdtune.tracking import default_uri


def open_study(run: StudyRun, *, create: bool = True) -> None:
    """``run.optuna_study``: the study's record in its Optuna storage (``store.open_study``)."""
    cfg = run.cfg
    run.optuna_study = store.open_study(run.paths.storage, cfg.name, [o.mode + "imize" for o in cfg.objectives],
                                        create=create)


def augmented_roles(cfg: StudyConfig) -> list[str]:
    """"teacher" and/or "student": those whose recipe augments, or may (a searched ``augment`` field)."""
    return [role for role in ("teacher", "student") if getattr(cfg, role).augment is not None
            or any(k.startswith(f"{role}.augment") for k in cfg.search.space)]


def load_data(run: StudyRun) -> None:
    """``run.data`` (once)."""
    if run.data is None:
        cfg = run.cfg
        run.data = data = load_dataset(cfg.dataset.name, cfg.dataset.params)
        streamed = " (streamed from its files)" if data.streamed else ""
        run.echo(f"dataset {data.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test"
                 f"{streamed}")
        for role in augmented_roles(cfg):
            check_images(data.input_shape, where=f"{role}.")  # before any training


def load_data_and_teacher(run: StudyRun, *, train_teacher: bool = True) -> None:
    """``run.data`` and ``run.teacher``: a user's pretrained teacher loaded from its weights or from MLflow,
    or kdtune's loaded from the cache (trained and cached first when allowed)."""
    load_data(run)
    cfg, data = run.cfg, run.data
    if run.teacher is not None:
        return
    if cfg.teacher.mlflow_model is not None:  # the user's trained teacher, logged to MLflow
        tracking_uri = default_uri(cfg.tracking.uri, run.paths.workdir)
        run.teacher = load_from_mlflow(cfg.teacher, data, tracking_uri=tracking_uri)
        run.echo(f"teacher loaded from MLflow {cfg.teacher.mlflow_model} (state_dict sha256 "
                 f"{run.teacher.weights_sha256})")
        return
    if cfg.teacher.weights is not None:  # the user's trained teacher: loaded, never trained
        run.teacher = load_pretrained(cfg.teacher, data, workdir=run.paths.workdir)
        run.echo(f"teacher loaded from {run.teacher.path} (sha256 {run.teacher.weights_sha256})")
        return
    run.teacher = load_or_train_teacher(cfg.teacher, data, seed=cfg.seed, root=run.paths.cache, train=train_teacher)
    run.echo(f"teacher {'loaded from cache' if run.teacher.from_cache else 'trained and cached'}: {run.teacher.path}")


def teacher_metrics(run: StudyRun) -> dict[str, float]:
    """The teacher's metrics, measured as the students' are."""
    measured = evaluate_model(frozen(run.teacher.model, "cpu"), run.data, run.cfg.evaluation, seed=run.cfg.seed)
    run.echo(" ".join(["teacher", *(f"{name}={measured[name]:.4f}" for name in (acc("val"), acc("test")))]))
    return measured


def read_records(run: StudyRun) -> list[TrialRecord]:
    """Every trial stored for the study, across sweeps."""
    return store.read_records(run.optuna_study, run.paths.students)


def load_students(run: StudyRun) -> None:
    """``run.students``: every complete trial whose weights are stored, rebuilt and loaded once (CPU)."""
    run.students = {r.trial_id: load_student(run, r) for r in run.records if r.status == "COMPLETE" and r.checkpoint}


def load_student(run: StudyRun, record: TrialRecord) -> nn.Module:
    """A finished trial's student, rebuilt from its config and loaded from its stored weights (on the CPU)."""
    spec = with_overrides(run.cfg, record.params).student.model
    student = build_model(spec.name, spec.params, run.data.info)
    student.load_state_dict(torch.load(str(record.checkpoint), map_location="cpu", weights_only=True))
    return student


def keep_majority_rate(run: StudyRun, *, stored_first: bool = False) -> None:
    """``run.majority_rate``: the share of the validation split's most frequent label, the floor a student's
    val/acc must exceed. Measured on ``run.data`` and kept in the study's storage; with ``stored_first`` (a
    rebuilt report) the stored value is used, so the report applies the floor the sweep did."""
    stored = store.majority_rate(run.optuna_study)
    if stored_first and stored is not None:
        run.majority_rate = stored
        return
    run.majority_rate = majority_rate(run.data.val.y.cpu().numpy())
    if run.majority_rate is not None and run.majority_rate != stored:
        store.save_majority_rate(run.optuna_study, run.majority_rate)


def record_teacher(run: StudyRun) -> None:
    """A pretrained teacher's weights digest into the study's record (refused if it changed)."""
    if run.teacher is not None and run.teacher.weights_sha256 is not None:
        source = "teacher.weights" if run.cfg.teacher.mlflow_model is None else "teacher.mlflow_model's weights"
        store.keep_teacher_weights(run.optuna_study, run.teacher.weights_sha256, what=source)
