"""Stage: the Pareto report (HTML, Markdown, plots, CSVs) and its hypervolume."""

from __future__ import annotations

import platform
import sys
import time

import torch

from kdtune import metrics
from kdtune.errors import KdtuneError
from kdtune.report import hypervolume_of, write_report
from kdtune.robustness import AUTOATTACK_BUDGET
from kdtune.study._run import StudyRun


def write(run: StudyRun) -> None:
    """Write the report into ``output.reports/<study>`` (in the report's process when the run has one) and
    compute its hypervolume; a report that cannot be written loses nothing stored."""
    cfg = run.cfg
    writer = run.drawer.write if run.drawer is not None else write_report
    try:
        run.report = writer(
            run.paths.reports, study_name=cfg.name, records=run.records, objectives=cfg.objectives,
            search_params=list(cfg.search.space), teacher_metrics=run.teacher_metrics, meta=_meta(run),
            metric_columns=metrics.trial_metric_names(cfg.evaluation) + metrics.autoattack_metric_names(cfg.evaluation),
            flags=run.flags, reference=cfg.report.reference.record() if cfg.report.reference else None,
            study_path=run.study_path, feasibility=run.feasibility,
        )
    except KdtuneError as err:
        raise KdtuneError(f"{err}; every trial is stored, so `kdtune report` rebuilds the report once fixed") from None
    run.hypervolume = hypervolume_of(run.records, cfg.objectives, run.teacher_metrics,
                                     run.feasibility.mask(run.records))


def _meta(run: StudyRun) -> dict[str, str]:
    """The run's facts, as the report lists them."""
    cfg, data, lat = run.cfg, run.data, run.cfg.evaluation.latency
    kind = cfg.search.sampler_kind
    sampler = f"auto ({kind})" if cfg.search.sampler.name == "auto" else kind
    facts = {
        "study": cfg.name,
        "description": cfg.description,
        "run": run.run_name,
        "dataset": f"{data.name} ({len(data.train)} train / {len(data.val)} val / {len(data.test)} test)",
        "objectives": ", ".join(f"{o.metric} ({o.mode})" for o in cfg.search.objectives) + " on the validation split",
        "sampler": f"{sampler}, {cfg.search.n_trials} trials per sweep, seed {cfg.seed}",
        "machine": f"{platform.machine()} {platform.processor() or ''} "
        f"({torch.get_num_threads()} torch threads available), Python {sys.version.split()[0]}, "
        f"torch {torch.__version__}",
        "latency protocol": f"measured serially after the sweep on the CPU: 1 thread, inference mode, "
        f"{lat.warmup} warm-up calls per model and batch size, {lat.repeats} interleaved repeats of "
        f"{lat.n_calls} timed calls, "
        + ("the fastest call" if lat.statistic == "min" else "the median per-call time"),
        "wall time": f"{time.monotonic() - run.started:.0f} s",
    }
    if run.teacher.weights_sha256 is not None:
        pre = cfg.teacher.preprocessing
        fed = (f"pixels x {pre.pixel_max:g}" + (f", mean {pre.mean}, std {pre.std}" if pre.mean else "")) if pre else \
            "pixels in [0, 1]"
        source = f"{run.teacher.path} (sha256" if cfg.teacher.mlflow_model is None else \
            f"MLflow model {cfg.teacher.mlflow_model} (state_dict sha256"
        facts["teacher"] = (f"pretrained, loaded from {source} {run.teacher.weights_sha256}), fed {fed}; "
                            "never trained by kdtune")
    if run.pace is not None:
        facts["sweep pace"] = run.pace.text()
    spec = cfg.evaluation.autoattack
    if spec.enabled:
        who = "the Pareto-front members" if spec.members == "front" else "every complete trial"
        facts["AutoAttack protocol"] = (f"ART, L-inf, eps {', '.join(map(str, spec.eps))}, on the first "
                                        f"{spec.n_samples} test images, for the teacher and {who}: "
                                        f"{AUTOATTACK_BUDGET}; seed {cfg.seed}")
    return facts
