"""Stage: the report and the front into MLflow: ``pareto`` tags, the hypervolume, the report's files."""

from __future__ import annotations

from kdtune.study._run import StudyRun


def publish(run: StudyRun) -> None:
    """Tag each trial's run ``pareto: true|false``, log ``pareto/hypervolume`` and the report (``report/``)
    on the sweep's parent run."""
    for r, on_front in zip(run.records, run.front()):
        run.tracker.set_tags(r.trial_id, {"pareto": str(bool(on_front)).lower()})
    run.tracker.log_metrics(None, {"pareto/hypervolume": run.hypervolume})
    run.tracker.log_artifacts(None, [run.report["report_md"].parent], artifact_path="report")
