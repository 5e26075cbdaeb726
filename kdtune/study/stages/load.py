"""Stage: load what a study has stored, to rebuild its report without training anything."""

from __future__ import annotations

from kdtune import store
from kdtune.errors import KdtuneError
from kdtune.study._run import StudyRun
from kdtune.study._stored import (
    keep_majority_rate,
    load_data_and_teacher,
    load_students,
    open_study,
    read_records,
    record_teacher,
    teacher_metrics,
)


def load(run: StudyRun) -> None:
    """The study's stored trials and their students, its data, its cached teacher (never trained here),
    the teacher's metrics and the stored majority-class rate (the floor the sweep applied)."""
    open_study(run, create=False)
    run.records = read_records(run)
    if not run.records:
        raise KdtuneError(f"no trials are stored for study '{run.cfg.name}' in {store.redact(run.paths.storage)}; "
                          "run the study first")
    load_data_and_teacher(run, train_teacher=False)
    record_teacher(run)
    keep_majority_rate(run, stored_first=True)
    run.teacher_metrics = teacher_metrics(run)
    load_students(run)
    run.run_name = (store.sweeps(run.optuna_study) or [{"name": "-"}])[-1]["name"]
