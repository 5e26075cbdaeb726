"""A whole study: ``run_study`` runs a study file end to end as a list of stages (``RUN_STAGES``) over one
``StudyRun``; ``rebuild_report`` and ``rerun_trial`` work from what is stored."""

from kdtune.study._pipeline import (
    MEASUREMENTS,
    REPORT_STAGES,
    RUN_STAGES,
    rebuild_report,
    rerun_trial,
    run_stages,
    run_study,
)
from kdtune.study._run import StudyOutcome, StudyPaths, StudyRun, SweepPace, SweepPlan

__all__ = [
    "MEASUREMENTS", "REPORT_STAGES", "RUN_STAGES", "StudyOutcome", "StudyPaths", "StudyRun", "SweepPace", "SweepPlan",
    "rebuild_report", "rerun_trial", "run_stages", "run_study",
]
