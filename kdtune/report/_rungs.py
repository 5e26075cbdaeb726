"""The report's "Stopped early" section: trials by early-stopping rung (``search.scheduler: moasha``)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from kdtune.records import Objective, TrialRecord
from kdtune.report._render import Block, Heading, Table, Text
from kdtune.report._tables import format_metric

STOPPED_NOTE = (
    "MO-ASHA (Schmucker et al. 2021, arXiv:2106.12639): at each rung a trial continued only if it ranked in the"
    " top ceil(n / reduction_factor) of the n trials that had reached that rung so far (earlier sweeps of the"
    " study included): non-dominated sorting on the objectives measured there, ties inside a front broken by an"
    " epsilon-net (farthest-first from the best first objective, in objectives normalized to the rung's range)."
    " Values at a rung are cheap measurements (see 'early stopping' above), not the final protocol. Stopped"
    " trials were told to Optuna as PRUNED; they are never on the front nor in the hypervolume."
)


def rung_table(records: Sequence[TrialRecord]) -> pd.DataFrame:
    """One row per rung epoch: how many trials reached it, how many stopped there, which."""
    epochs = sorted({e for r in records for e in r.rungs} | {r.epochs for r in _pruned(records)})
    rows = []
    for e in epochs:
        stopped = [r.trial_id for r in _pruned(records) if r.epochs == e]
        reached = sum(e in r.rungs or (r.status == "PRUNED" and r.epochs == e) for r in records)
        rows.append([e, reached, len(stopped), ", ".join(stopped) or "–"])
    return pd.DataFrame(rows, columns=["rung (epoch)", "trials that reached it", "stopped there", "stopped trials"])


def stopped_table(records: Sequence[TrialRecord], objectives: Sequence[Objective]) -> pd.DataFrame:
    """Each stopped trial, by rung: its id and its objectives as measured at the rung it stopped at."""
    rows = []
    for r in sorted(_pruned(records), key=lambda r: r.epochs or 0):
        at = r.rungs.get(r.epochs or 0, {})
        rows.append([r.epochs, r.trial_id, *(format_metric(o.metric, at.get(o.metric)) for o in objectives)])
    return pd.DataFrame(rows, columns=["rung (epoch)", "trial", *(f"{o.metric} at the rung" for o in objectives)])


def stopped_blocks(records: Sequence[TrialRecord], objectives: Sequence[Objective]) -> list[Block]:
    """The section, or nothing for a study without rungs."""
    if not any(r.rungs or r.status == "PRUNED" for r in records):
        return []
    return [Heading("Stopped early"), Text(STOPPED_NOTE), Table(rung_table(records)),
            Table(stopped_table(records, objectives), "No trial was stopped early.")]


def _pruned(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if r.status == "PRUNED" and r.epochs is not None]
