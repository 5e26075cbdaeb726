"""The report's numbers as pandas DataFrames: the trials CSV and the display tables (no I/O)."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from kdtune import metrics as vocab  # metric names (a local "metrics" is a row's values)
from kdtune.pareto import hypervolume, normalized_objectives
from kdtune.records import Objective, Provenance, TrialRecord
from kdtune.spec import Constraint

MISSING = "–"
ONNX_COLUMN = "ONNX file"


def hypervolume_of(
    records: Sequence[TrialRecord],
    objectives: Sequence[Objective],
    teacher_metrics: dict[str, float],
    feasible: np.ndarray | None = None,
) -> float:
    """Hypervolume of the trials in kdtune's normalized space (see ``normalized_objectives``); only of the
    ``feasible`` ones (bool (n,), ``kdtune.feasibility``) when given."""
    values, reference = normalized_objectives(records, objectives, teacher_metrics)
    if feasible is not None:  # values has a row per record with finite objectives, in record order
        eligible = np.array([i for i, r in enumerate(records) if r.objective_values(list(objectives)) is not None],
                            dtype=int)
        values = values[np.asarray(feasible, dtype=bool)[eligible]]
    return hypervolume(values, [o.mode for o in objectives], reference)


def trials_frame(
    records: Sequence[TrialRecord],
    front: np.ndarray,
    *,
    search_params: Sequence[str],
    metric_columns: Sequence[str],
    feasible: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per trial: trial_id, status, epochs, sweep_s, search params, metrics, error, feasible, pareto (in
    that order).

    Metric cells are NaN (written empty) for failed and pruned trials and for missing metrics; ``epochs`` is
    the epochs trained (a PRUNED trial's: the rung it was stopped at), empty where not recorded; ``sweep_s`` the
    wall-clock seconds of sweeping when the trial finished (``kdtune.search_cost``), empty where not recorded. ``feasible``
    (bool (n,), ``kdtune.feasibility``; default: every COMPLETE trial) is False for failed and pruned trials.
    """
    if feasible is None:
        feasible = np.array([r.status == "COMPLETE" for r in records], dtype=bool)
    columns = ["trial_id", "status", "epochs", "sweep_s", *search_params, *metric_columns, "error", "feasible", "pareto"]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise ValueError(f"column names used twice in the trials table: {duplicated}")
    rows = []
    for record, on_front, ok in zip(records, front, feasible, strict=True):
        metrics = record.metrics if record.status == "COMPLETE" else {}
        row: dict[str, Any] = {"trial_id": record.trial_id, "status": record.status, "epochs": record.epochs,
                               "sweep_s": None if record.sweep_s is None else round(record.sweep_s, 1)}
        row.update({p: record.params.get(p) for p in search_params})
        row.update({m: _as_float(metrics.get(m)) for m in metric_columns})
        row.update(error=record.error, feasible=bool(ok), pareto=bool(on_front))
        rows.append(row)
    frame = pd.DataFrame(rows, columns=columns, dtype=object)  # keeps integer params as ints
    return frame.astype({**{m: float for m in metric_columns}, "feasible": bool, "pareto": bool})


def teacher_table(teacher_metrics: dict[str, float], metric_columns: Sequence[str]) -> pd.DataFrame:
    """The teacher's metrics, in ``metric_columns`` order, then any others alphabetically."""
    names = [m for m in metric_columns if m in teacher_metrics]
    names += sorted(set(teacher_metrics) - set(names))
    return pd.DataFrame(
        {"metric": names, "value": [format_metric(m, teacher_metrics[m]) for m in names]}
    )


def front_table(
    records: Sequence[TrialRecord],
    front: np.ndarray,
    objectives: Sequence[Objective],
    *,
    search_params: Sequence[str],
    metric_columns: Sequence[str],
    teacher_metrics: dict[str, float] | None = None,
    shares: Sequence[str | None] = (),
    distances: dict[int, float] | None = None,
    knee: int | None = None,
    rerun: str | None = None,
    files: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Front members, best first objective first: search params, objective, val and test metrics, size and
    latency (with its spread), then (when given) the share of each ``shares`` metric the teacher reaches, the
    compression (the teacher's params, FLOPs and bytes over the member's), the distance to the ideal point
    (``knee`` marked), the command that retrains the trial (``rerun`` + trial id) and its ONNX file (``files``:
    trial id -> path)."""
    objective_metrics = [o.metric for o in objectives]
    val_test = [m for m in metric_columns if m == vocab.acc("val") or _split_of(m) == "test"]
    cost = [m for m in metric_columns if m in vocab.COUNTS or vocab.latency_batch(m) is not None
            or vocab.spread_batch(m) is not None]
    metrics = list(dict.fromkeys([*objective_metrics, *val_test, *cost]))
    positions = {id(r): i for i, r in enumerate(records)}
    members = sorted_by_first_objective([r for r, f in zip(records, front) if f], objectives)
    teacher = teacher_metrics or {}
    shares = [m for m in shares if m is not None]
    smaller = [m for m in vocab.COUNTS if m in teacher and m in metrics]  # compression: how many times smaller
    rows = []
    for r in members:
        row = [r.trial_id]
        row += [format_param(r.params.get(p)) for p in search_params]
        row += [format_metric(m, r.metrics.get(m)) for m in metrics]
        row += [format_share(r.metrics.get(m), teacher.get(m)) for m in shares]
        row += [format_ratio(teacher.get(m), r.metrics.get(m)) for m in smaller]
        if distances is not None:
            i = positions[id(r)]
            row.append(format_metric("", distances.get(i)) + (" (suggested pick)" if i == knee else ""))
        if rerun is not None:
            row.append(f"{rerun} {shlex.quote(r.trial_id)}")
        if files is not None:
            row.append(files.get(r.trial_id, MISSING))
        rows.append(row)
    headers = ["trial", *search_params, *metrics, *(f"% of teacher {m}" for m in shares)]
    headers += [f"teacher / student {m.split('/')[-1]}" for m in smaller]
    headers += ["distance to ideal"] if distances is not None else []
    headers += ["rerun"] if rerun is not None else []
    headers += [ONNX_COLUMN] if files is not None else []
    return pd.DataFrame(rows, columns=headers)


def format_ratio(teacher: float | None, student: float | None) -> str:
    """How many times the student's cost fits in the teacher's, e.g. ``10.5x``; ``–`` when missing or 0."""
    teacher, student = _as_float(teacher), _as_float(student)
    if not (math.isfinite(teacher) and math.isfinite(student)) or student == 0:
        return MISSING
    return f"{teacher / student:.3g}x"


def format_share(value: float | None, teacher: float | None) -> str:
    """``value`` as a percentage of the teacher's, e.g. ``97.1%``; ``–`` when either is missing or 0."""
    value, teacher = _as_float(value), _as_float(teacher)
    if not (math.isfinite(value) and math.isfinite(teacher)) or teacher == 0:
        return MISSING
    return f"{100 * value / teacher:.1f}%"


def results_table(
    records: Sequence[TrialRecord],
    front: np.ndarray,
    objectives: Sequence[Objective],
    *,
    teacher_metrics: dict[str, float],
    metric_columns: Sequence[str],
    search_params: Sequence[str] = (),
) -> pd.DataFrame:
    """A paper-style results table: the teacher, then every complete trial by first objective,
    each with its searched hyperparameters (so a grid study reads like the source's table)."""
    complete = [r for r in records if r.status == "COMPLETE"]
    on_front = {id(r) for r, f in zip(records, front) if f}
    available = _available_metrics(complete, objectives, teacher_metrics, metric_columns)
    columns = _results_columns(available, objectives)
    rows = [["teacher", ""] + [""] * len(search_params) + [format_metric(m, teacher_metrics.get(m)) for m, _ in columns]]
    for r in sorted_by_first_objective(complete, objectives):
        front_flag = "yes" if id(r) in on_front else ""
        params = [format_param(r.params.get(p)) for p in search_params]
        rows.append([r.trial_id, front_flag, *params] + [format_metric(m, r.metrics.get(m)) for m, _ in columns])
    headers = ["model", "on front", *search_params, *(header for _, header in columns)]
    return pd.DataFrame(rows, columns=headers)


def failed_table(records: Sequence[TrialRecord]) -> pd.DataFrame:
    """Failed trials and the one-line reason each failed (a trial stopped early has not failed)."""
    rows = [[r.trial_id, r.error or "(no reason recorded)"] for r in records if r.status == "FAILED"]
    return pd.DataFrame(rows, columns=["trial", "error"])


def infeasible_table(
    records: Sequence[TrialRecord], feasible: np.ndarray, bounds: Sequence[Constraint]
) -> pd.DataFrame:
    """Complete but infeasible trials and the bounds each one misses, with its values."""
    rows = []
    for r, ok in zip(records, feasible):
        if r.status == "COMPLETE" and not ok:
            missed = [f"{b.metric} {b.op} {b.threshold:.4g} (it has {format_metric(b.metric, r.metrics.get(b.metric))})"
                      for b in bounds if not b.holds(r.metrics.get(b.metric))]
            rows.append([r.trial_id, "; ".join(missed)])
    return pd.DataFrame(rows, columns=["infeasible trial", "misses"])


def flags_table(flags: dict[str, list[str]]) -> pd.DataFrame:
    """One row per robustness sanity-check violation: the model (teacher or trial) and the check it failed."""
    rows = [[model, violation] for model, found in flags.items() for violation in found]
    return pd.DataFrame(rows, columns=["model", "violation"])


def unscored_trials(records: Sequence[TrialRecord], objectives: Sequence[Objective]) -> list[str]:
    """Complete trials left off the front because an objective is missing or not finite."""
    notes = []
    for r in records:
        if r.status == "COMPLETE" and r.objective_values(list(objectives)) is None:
            shown = ", ".join(f"{o.metric}={format_metric(o.metric, r.metrics.get(o.metric))}" for o in objectives)
            notes.append(f"{r.trial_id} ({shown})")
    return notes


def format_metric(name: str, value: float | None) -> str:
    """A metric for display: counts with thousands separators, everything else to 4 digits."""
    value = _as_float(value)
    if math.isnan(value):
        return MISSING
    if name in vocab.COUNTS or name.split("/")[-1].startswith("n_"):
        return f"{value:,.0f}"
    return f"{value:.4g}"


def format_param(value: Any) -> str:
    """A hyperparameter value for display."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _as_float(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def sorted_by_first_objective(
    records: Sequence[TrialRecord], objectives: Sequence[Objective]
) -> list[TrialRecord]:
    """Best first on the first objective; trials without a finite value go last."""
    first = objectives[0]
    sign = -1.0 if first.mode == "max" else 1.0

    def key(record: TrialRecord) -> tuple[bool, float]:
        value = _as_float(record.metrics.get(first.metric))
        return (not math.isfinite(value), sign * value if math.isfinite(value) else 0.0)

    return sorted(records, key=key)


def _available_metrics(
    complete: Sequence[TrialRecord],
    objectives: Sequence[Objective],
    teacher_metrics: dict[str, float],
    metric_columns: Sequence[str],
) -> list[str]:
    names = list(metric_columns) + [o.metric for o in objectives if o.metric not in metric_columns]
    present = set(teacher_metrics).union(*(r.metrics for r in complete))
    return [m for m in names if m in present]


def _results_columns(available: list[str], objectives: Sequence[Objective]) -> list[tuple[str, str]]:
    """(metric, header) pairs: accuracy, params, latency and its spread, Jacobian norm, robust acc and AutoAttack
    acc per eps."""
    split = "test" if vocab.acc("test") in available else "val"
    columns = [(vocab.acc(split), f"accuracy ({split})")]
    columns += [(vocab.PARAMS, "params"), (vocab.FLOPS, "FLOPs / image"), (vocab.BYTES, "bytes")]
    for m in available:
        if vocab.latency_batch(m) is not None:
            columns.append((m, f"latency ms (batch {vocab.latency_batch(m)})"))
            spread = vocab.latency_spread(vocab.latency_batch(m))
            columns += [(spread, f"± spread ms (batch {vocab.latency_batch(m)})")] if spread in available else []
    columns.append((vocab.JACOBIAN_NORM, "Jacobian norm"))
    robust = [m for m in available if vocab.is_attacked_acc(m, split)]
    columns += [(m, f"robust acc ε={vocab.eps_name(vocab.eps_of(m))} ({split})")
                for m in sorted(robust, key=vocab.eps_of)]
    autoattack = [m for m in available if vocab.is_attacked_acc(m, "test", "autoattack")]  # test split only
    columns += [(m, f"AutoAttack acc ε={vocab.eps_name(vocab.eps_of(m))} (test)")
                for m in sorted(autoattack, key=vocab.eps_of)]
    columns = [(m, header) for m, header in columns if m in available]
    shown = {m for m, _ in columns}
    extra = [(o.metric, o.metric) for o in objectives if o.metric not in shown and o.metric in available]
    return extra + columns


def provenance_table(records: Sequence[TrialRecord]) -> pd.DataFrame:
    """What the students learned from, one row per distinct method and transfer set, with the trials."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for r in records:
        if r.status == "COMPLETE" and r.provenance:
            p = r.provenance
            key = (p.method, _describe_set(p), p.from_real_data)
            groups.setdefault(key, []).append(r.trial_id)
    rows = [[*key, ", ".join(ids)] for key, ids in sorted(groups.items())]
    return pd.DataFrame(rows, columns=["method", "student trained on", "taken from the real training data", "trials"])


def _describe_set(p: Provenance) -> str:
    parts = [p.transfer_set]
    if p.n is not None:
        parts.append(f"{p.n} examples")
    if p.objective is not None:
        parts.append(f"objective {p.objective}")
    return ", ".join(parts)


def seeds_table(
    records: Sequence[TrialRecord], objectives: Sequence[Objective], metric_columns: Sequence[str]
) -> pd.DataFrame:
    """Trials repeated over seeds: ``mean ± ci95`` of each objective and of test accuracy."""
    repeated = [r for r in records if vocab.SEEDS_DONE in r.metrics]
    names = list(dict.fromkeys([o.metric for o in objectives] + [m for m in metric_columns if m == vocab.acc("test")]))
    names = [m for m in names if any(vocab.mean_of(m) in r.metrics for r in repeated)]
    rows = [[r.trial_id, f"{r.metrics[vocab.SEEDS_DONE]:.0f}"]
            + [format_mean_ci(m, r.metrics.get(vocab.mean_of(m)), r.metrics.get(vocab.ci95_of(m))) for m in names]
            for r in repeated]
    return pd.DataFrame(rows, columns=["trial", "seeds", *names])


def format_mean_ci(name: str, mean: float | None, ci: float | None) -> str:
    """``mean ± ci`` for display (the mean alone without a ci; ``MISSING`` without a mean)."""
    if mean is None:
        return MISSING
    return f"{format_metric(name, mean)} ± {format_metric(name, ci)}" if ci is not None else format_metric(name, mean)


def _split_of(name: str) -> str | None:
    metric = vocab.parse_or_none(name)
    return metric.group if metric is not None else None
