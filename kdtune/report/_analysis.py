"""The report's derived numbers (no I/O): knee point, hypervolume by trial, robustness curves, importances.

Everything works in kdtune's normalized objective space (``kdtune.pareto.normalized_objectives``),
computed once per report and passed around as a ``Space``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdtune.metrics import Metric, attacked_acc, eps_of, is_attacked_acc
from kdtune.metrics import acc as acc_name
from kdtune.pareto import hypervolume, normalized_objectives
from kdtune.records import Objective, TrialRecord

logger = logging.getLogger(__name__)

MIN_IMPORTANCE_TRIALS = 4  # fewer complete trials than this: no importance estimate
KNEE_DEFINITION = (
    "The suggested pick is the knee of the front: the member closest (Euclidean distance) to the ideal point"
    " in the hypervolume's normalized space, where each 'max' objective (an accuracy) is taken as is with"
    " ideal 1, and each 'min' objective is divided by the teacher's value (without one, by its max over the"
    " trials, as for the hypervolume) with ideal 0. One point of accuracy therefore weighs as much as 1% of"
    " the teacher's latency or size. Ties go to the better value of the first objective."
)


@dataclass(frozen=True)
class Space:
    """Normalized objectives of the eligible records: ``rows[k]`` (m,) belongs to ``records[index[k]]``."""

    index: np.ndarray  # (k,) int: positions in the record list
    rows: np.ndarray  # (k, m)
    reference: np.ndarray  # (m,)
    modes: tuple[str, ...]

    @classmethod
    def of(
        cls, records: Sequence[TrialRecord], objectives: Sequence[Objective], teacher_metrics: dict[str, float],
        feasible: np.ndarray | None = None,
    ) -> Space:
        """The eligible records, only the ``feasible`` ones (bool (n,)) when given; normalized over all."""
        rows, reference = normalized_objectives(records, objectives, teacher_metrics)
        index = np.array([i for i, r in enumerate(records) if r.objective_values(list(objectives)) is not None],
                         dtype=int)
        keep = np.ones(len(index), dtype=bool) if feasible is None else np.asarray(feasible, dtype=bool)[index]
        return cls(index[keep], rows[keep], reference, tuple(o.mode for o in objectives))

    def hypervolume(self, n_first: int | None = None) -> float:
        """The normalized hypervolume of all records, or of the first ``n_first`` records only."""
        return self.hypervolume_of(self.index if n_first is None else range(n_first))

    def hypervolume_of(self, positions: Sequence[int]) -> float:
        """The normalized hypervolume of the eligible records among ``positions`` (in the record list)."""
        keep = np.isin(self.index, np.asarray(list(positions), dtype=int))
        if not keep.any():
            return 0.0
        return hypervolume(self.rows[keep], self.modes, self.reference)

    def ideal(self) -> np.ndarray:
        """(m,): 1 for a 'max' objective (or its best value, if above 1), 0 for a 'min' one."""
        best = self.rows.max(axis=0) if len(self.rows) else np.zeros(len(self.modes))
        return np.array([max(1.0, b) if mode == "max" else 0.0 for mode, b in zip(self.modes, best)])

    def distances(self) -> dict[int, float]:
        """{record position: Euclidean distance to the ideal point} for every eligible record."""
        gaps = self.rows - self.ideal()  # (k, m)
        return {int(i): float(d) for i, d in zip(self.index, np.sqrt((gaps**2).sum(axis=1)))}


def knee_index(space: Space, front: np.ndarray) -> int | None:
    """Position of the front member closest to the ideal point (``KNEE_DEFINITION``); None if no front."""
    distances = space.distances()
    members = [i for i in np.flatnonzero(front) if int(i) in distances]
    if not members:
        return None
    first = {int(i): row[0] for i, row in zip(space.index, space.rows)}
    sign = -1.0 if space.modes[0] == "max" else 1.0
    return int(min(members, key=lambda i: (round(distances[int(i)], 12), sign * first[int(i)])))


def suggested_pick(
    records: Sequence[TrialRecord], objectives: Sequence[Objective], teacher_metrics: dict[str, float],
    front: np.ndarray, feasible: np.ndarray | None = None,
) -> int | None:
    """Position in ``records`` of the report's suggested pick (``KNEE_DEFINITION``), as ``write_report`` finds it
    over the ``feasible`` trials; None without a front."""
    return knee_index(Space.of(records, objectives, teacher_metrics, feasible), front)


def hypervolume_by_trial(space: Space, n_records: int) -> np.ndarray:
    """(n,): the hypervolume of the first k records for k = 1..n (records are in trial order)."""
    return np.array([space.hypervolume(k) for k in range(1, n_records + 1)])


def robust_curve(metrics: dict[str, float], *, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """(eps, accuracy) sorted by eps from ``<split>/robust_acc@<eps>``; eps 0 is the clean ``<split>/acc``."""
    points = {eps_of(name): float(value) for name, value in metrics.items()
              if is_attacked_acc(name, split) and value is not None and math.isfinite(value)}
    clean = metrics.get(acc_name(split))
    if points and clean is not None and math.isfinite(clean):
        points.setdefault(0.0, float(clean))
    eps = np.array(sorted(points), dtype=float)
    return eps, np.array([points[e] for e in eps], dtype=float)


def share_metrics(objectives: Sequence[Objective], metric_columns: Sequence[str]) -> tuple[str | None, str | None]:
    """The accuracy and robust accuracy whose teacher share the front table shows.

    Test split when measured; the robust one is at the eps of a robust-accuracy objective, else the smallest eps.
    """
    names = set(metric_columns) | {o.metric for o in objectives}
    acc = next((m for m in (acc_name("test"), acc_name("val")) if m in names), None)
    split = Metric.parse(acc).group if acc else "test"
    robust = sorted((m for m in names if is_attacked_acc(m, split)), key=eps_of)
    wanted = [attacked_acc(split, eps_of(o.metric)) for o in objectives if is_attacked_acc(o.metric, "val")
              or is_attacked_acc(o.metric, "test")]
    chosen = next((m for m in wanted if m in robust), robust[0] if robust else None)
    return acc, chosen


@dataclass(frozen=True)
class Importances:
    """{objective metric: {param: importance}} from Optuna's fANOVA, or why there is none (``note``)."""

    values: dict[str, dict[str, float]]
    note: str


def param_importances(
    records: Sequence[TrialRecord], objectives: Sequence[Objective], search_params: Sequence[str]
) -> Importances:
    """Optuna's fANOVA importances (seeded) of the searched parameters, one set per objective.

    The records go into an in-memory Optuna study with distributions inferred from their values; only
    parameters set in every complete trial and taking at least two values are assessed.
    """
    import optuna

    done = [(r, v) for r in records if (v := r.objective_values(list(objectives))) is not None]
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return Importances({}, f"Not estimated: {len(done)} complete trials with finite objectives"
                               f" (at least {MIN_IMPORTANCE_TRIALS} needed).")
    params = {p: [_plain(r.params.get(p)) for r, _ in done] for p in search_params}
    conditional = [p for p, vs in params.items() if any(v is None for v in vs)]
    constant = [p for p, vs in params.items() if p not in conditional and len(set(map(repr, vs))) < 2]
    assessed = [p for p in params if p not in conditional and p not in constant]
    skipped = _skipped_note(conditional, constant)
    if not assessed:
        return Importances({}, "Not estimated: no searched parameter takes two or more values in every"
                               " complete trial." + skipped)
    distributions = {p: _distribution(params[p]) for p in assessed}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        study = optuna.create_study(directions=[o.mode + "imize" for o in objectives])
    finally:
        optuna.logging.set_verbosity(verbosity)
    for k, (_, values) in enumerate(done):
        study.add_trial(optuna.trial.create_trial(
            values=values, params={p: params[p][k] for p in assessed}, distributions=distributions))
    result = {}
    for j, objective in enumerate(objectives):
        try:
            found = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                params=assessed, target=lambda t, j=j: t.values[j])
        except (RuntimeError, ValueError) as err:  # e.g. a constant objective
            logger.warning("no importances for %s: %s", objective.metric, err)
            continue
        result[objective.metric] = {p: float(found.get(p, 0.0)) for p in assessed}
    note = f"Optuna's fANOVA (seed 0) over {len(done)} complete trials; each objective's importances sum to 1."
    return Importances(result, note + skipped)


def _skipped_note(conditional: list[str], constant: list[str]) -> str:
    parts = []
    if conditional:
        parts.append(" Not assessed, being unset in some trials (conditional): " + ", ".join(conditional) + ".")
    if constant:
        parts.append(" Not assessed, taking a single value: " + ", ".join(constant) + ".")
    return "".join(parts)


def _plain(value: Any) -> Any:
    """A value Optuna can store in a distribution: None, bool, int, float or str."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return None if isinstance(value, float) and math.isnan(value) else value
    return str(value)


def _distribution(values: list[Any]):
    """Int, float or categorical, inferred from a parameter's values across the trials."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return IntDistribution(min(values), max(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return FloatDistribution(float(min(values)), float(max(values)))
    return CategoricalDistribution(sorted(set(values), key=repr))
