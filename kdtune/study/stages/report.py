"""Stage: the Pareto report (HTML, Markdown, plots, CSVs) and its hypervolume."""

from __future__ import annotations

import platform
import sys
import time
from collections import Counter

import torch

from kdtune import metrics
from kdtune.errors import KdtuneError
from kdtune.report import hypervolume_of, write_report
from kdtune.robustness import AUTOATTACK_BUDGET
from kdtune.study._run import StudyRun
from kdtune.study.stages.serial_latency import TEACHER


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
            study_path=run.study_path, ablation=run.ablation if cfg.evaluation.ablation.enabled else None,
            onnx_files={name: path for name, path in _onnx_links(run).items() if name != TEACHER},
            teacher_onnx=_onnx_links(run).get(TEACHER), feasibility=run.feasibility,
        )
    except KdtuneError as err:
        raise KdtuneError(f"{err}; every trial is stored, so `kdtune report` rebuilds the report once fixed") from None
    run.hypervolume = hypervolume_of(run.records, cfg.objectives, run.teacher_metrics,
                                     run.feasibility.mask(run.records))


def _onnx_links(run: StudyRun) -> dict[str, str]:
    """The ONNX files written for the report (``stages.onnx_files``), relative to its folder: ``onnx/<id>.onnx``."""
    return {name: path.relative_to(run.paths.reports).as_posix() for name, path in run.onnx_files.items()}


def _meta(run: StudyRun) -> dict[str, str]:
    """The run's facts, as the report lists them."""
    cfg, data = run.cfg, run.data
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
        "latency protocol": _latency_protocol(run),
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
    sched = cfg.search.scheduler
    if sched.name == "moasha":
        from kdtune.rungs import rung_accuracy_note

        rungs = ", ".join(map(str, sched.rungs(cfg.student.epochs)))
        facts["early stopping"] = (f"MO-ASHA, reduction factor {sched.reduction_factor}, rungs at epochs {rungs} "
                                   f"(of {cfg.student.epochs}); {rung_accuracy_note(sched)}")
    spec = cfg.evaluation.autoattack
    if spec.enabled:
        who = "the Pareto-front members" if spec.members == "front" else "every complete trial"
        facts["AutoAttack protocol"] = (f"ART, L-inf, eps {', '.join(map(str, spec.eps))}, on the first "
                                        f"{spec.n_samples} test images, for the teacher and {who}: "
                                        f"{AUTOATTACK_BUDGET}; seed {cfg.seed}")
    return facts


def _latency_protocol(run: StudyRun) -> str:
    """How latency was measured: the runtime (and, for ONNX Runtime, the exporter and the check), the timing
    protocol, the figure and its spread."""
    lat = run.cfg.evaluation.latency
    stat = "the fastest call" if lat.statistic == "min" else "the median per-call time"
    if lat.runtime == "onnxruntime":
        from importlib.metadata import version

        from kdtune.compat.onnx import EXPORTER_NAMES, OPSET
        from kdtune.onnx_latency import TOLERANCE

        used = Counter(m.file.exporter for m in run.onnx.values())
        exporters = ", ".join(f"the {EXPORTER_NAMES[name]} for {n} model{'s' * (n != 1)}" for name, n in used.items())
        where = (f"in ONNX Runtime {version('onnxruntime')} (CPUExecutionProvider, 1 intra-op and 1 inter-op "
                 f"thread, sequential execution), each model exported by torch.onnx.export ({exporters or 'none'}; "
                 f"opset {OPSET}, dynamic batch axis) and its logits checked against PyTorch's on a fixed input "
                 f"(model/onnx_max_abs_diff <= {TOLERANCE:g} x max(1, max |logit|))")
    else:
        where = f"in eager PyTorch {torch.__version__} (1 thread, inference mode)"
    return (f"measured serially after the sweep on the CPU {where}: {lat.warmup} warm-up calls per model and batch "
            f"size, {lat.repeats} interleaved repeats of {lat.n_calls} timed calls, {stat}; spread "
            f"(latency/spread_ms_b<batch>): max - min over the repeats of each repeat's "
            + ("fastest call" if lat.statistic == "min" else "median call"))
