"""A study's report: trials/pareto CSVs, pairwise front plots, hypervolume, Markdown and HTML.

``write_report`` writes everything into one directory; ``hypervolume_of`` is the number it
reports, for the study layer to log.
"""

import importlib
import tempfile
from pathlib import Path
from typing import Any

from kdtune.records import Objective, TrialRecord

__all__ = ["HYPERVOLUME_FORMAT", "ReportProcess", "hypervolume_of", "preload_report", "suggested_pick",
           "write_report"]
_LAZY = {"HYPERVOLUME_FORMAT": "_write", "ReportProcess": "_process", "hypervolume_of": "_tables",
         "suggested_pick": "_analysis", "write_report": "_write"}


def __getattr__(name: str) -> Any:
    """The package's functions load the report's libraries (pandas, matplotlib, plotly) when first used,
    not on ``import kdtune.report``: the report's process (``_process``) imports this package first and
    loads them in its warm-up, at the lowest CPU priority."""
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def preload_report() -> None:
    """Write a throwaway report of synthetic trials into a temporary directory, e.g. in the process that
    draws a study's report while its sweep runs (``_process``): every library the report uses gets
    imported (matplotlib, PIL, plotly, jinja2, and scikit-learn and SciPy behind Optuna's fANOVA) and its
    first-use work done (fonts, plotly's validators), about 1-2 s that the study's own report after the
    sweep then does not wait for."""
    objectives = [Objective("val/acc", "max"), Objective("val/robust_acc@0.1", "max"),
                  Objective("latency/ms_b1", "min")]
    records = []
    for i in range(6):
        acc, robust, ms = 0.9 - 0.05 * i, 0.2 + 0.07 * ((i * 3) % 5), 0.2 + 0.1 * i
        metrics = {"val/acc": acc, "val/robust_acc@0.1": robust, "latency/ms_b1": ms, "test/acc": acc,
                   "test/robust_acc@0.1": robust, "test/robust_acc@0.2": robust / 2}
        records.append(TrialRecord(f"warm-{i}", "COMPLETE", {"a": 1.0 + i, "b": float(i % 3)}, metrics))
    from kdtune.feasibility import Feasibility
    from kdtune.report._write import write_report

    with tempfile.TemporaryDirectory(prefix="kdtune-preload-") as tmp:
        write_report(Path(tmp), study_name="preload", records=records, objectives=objectives, search_params=["a", "b"],
                     teacher_metrics={"val/acc": 0.95, "latency/ms_b1": 1.0, "test/acc": 0.95}, meta={},
                     metric_columns=sorted(records[0].metrics),
                     feasibility=Feasibility(majority_rate=0.7))  # the last trial greyed out, as below the floor
