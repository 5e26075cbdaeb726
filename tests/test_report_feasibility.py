"""The report under constraints and the majority-class floor: the ``feasible`` column, the front, the
hypervolume and the pick among feasible trials only, infeasible trials greyed out in every front plot
(matplotlib and plotly), and a plain statement when nothing is feasible."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from kdtune.feasibility import Feasibility
from kdtune.report import HYPERVOLUME_FORMAT, hypervolume_of, write_report
from kdtune.report._plots import INFEASIBLE_LABEL
from kdtune.spec import Constraint
from tests.test_report import (
    METRIC_COLUMNS,
    OBJECTIVES,
    SEARCH_PARAMS,
    TEACHER,
    _plotly_data,
    brute_force_front,
    make_records,
    read_csv,
)

# t00 (the most accurate, 2.0 ms) breaks the latency bound; t08 (0.60) is not above the majority rate of
# 0.65; t09 has no val/acc, so it cannot be shown to be above it.
FEASIBILITY = Feasibility((Constraint("latency/ms_b1", "<=", 1.5),), majority_rate=0.65)
INFEASIBLE = {"t00", "t08", "t09"}
FAILED = {"t10", "t11"}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """The report under FEASIBILITY, with what each matplotlib figure held when it was saved."""
    from matplotlib.figure import Figure

    figures: dict[str, list[tuple[str, set[tuple[float, float]]]]] = {}
    stairs: dict[str, list[float]] = {}
    save = Figure.savefig

    def spy(fig, path, *args, **kwargs):
        ax = fig.axes[0]
        handles, labels = ax.get_legend_handles_labels()
        figures[path.stem] = [(label, {tuple(map(float, xy)) for xy in h.get_offsets()} if hasattr(h, "get_offsets")
                               else set()) for h, label in zip(handles, labels)]
        stairs[path.stem] = [float(x) for line in ax.lines for x in line.get_xdata()]
        return save(fig, path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", spy)
        written = write_report(
            tmp_path_factory.mktemp("feasible"), study_name="demo", records=make_records(), objectives=OBJECTIVES,
            search_params=SEARCH_PARAMS, teacher_metrics=TEACHER, meta={}, metric_columns=METRIC_COLUMNS,
            feasibility=FEASIBILITY,
        )
    return written, figures, stairs


def values(data) -> list[float]:
    """A plotly trace's coordinates: a list, or numpy's bytes as plotly encodes them (``bdata``)."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)


def feasible_front() -> set[str]:
    """The front by brute force over the feasible trials alone (an independent dominance check)."""
    return brute_force_front([r for r in make_records() if r.trial_id not in INFEASIBLE | FAILED])


def test_trials_csv_says_which_trials_are_feasible_and_the_front_is_theirs(drawn):
    written, _, _ = drawn
    trials = read_csv(written["trials_csv"]).set_index("trial_id")
    assert list(trials.columns[-3:]) == ["error", "feasible", "pareto"]
    assert set(trials.index[trials["feasible"] == "True"]) == {f"t0{i}" for i in range(10)} - INFEASIBLE
    assert set(trials.index[trials["pareto"] == "True"]) == feasible_front() == {"t01", "t02", "t03", "t07"}
    assert set(read_csv(written["pareto_csv"])["trial_id"]) == feasible_front()


def test_the_report_states_the_constraints_the_floor_and_what_they_removed(drawn):
    written, _, _ = drawn
    md = written["report_md"].read_text(encoding="utf-8")
    assert "12 trials: 10 complete, 2 failed, 3 infeasible, 4 on the Pareto front." in md
    section = md.split("## Feasibility", 1)[1].split("\n## ", 1)[0]
    assert "Constraints: latency/ms_b1 <= 1.5." in section
    assert "val/acc must exceed 0.65, the share of the validation split's most frequent label" in section
    assert "3 of 10 complete trials are infeasible" in section
    assert "| t00 | latency/ms_b1 <= 1.5 (it has 2) |" in section
    assert "| t08 | val/acc > 0.65 (it has 0.6) |" in section
    pick = re.search(r"Suggested pick: trial (\S+) ", md)[1]
    assert pick in feasible_front()


def test_the_hypervolume_counts_feasible_trials_only(drawn):
    written, _, _ = drawn
    records = make_records()
    feasible = FEASIBILITY.mask(records)
    kept = hypervolume_of(records, OBJECTIVES, TEACHER, feasible)
    assert kept == pytest.approx(hypervolume_of([r for r, ok in zip(records, feasible) if ok], OBJECTIVES, TEACHER))
    assert kept < hypervolume_of(records, OBJECTIVES, TEACHER)  # t00 and t08 would add volume
    assert f"Hypervolume: {HYPERVOLUME_FORMAT.format(kept)}." in written["report_md"].read_text(encoding="utf-8")


def test_matplotlib_plots_grey_out_infeasible_trials_with_a_legend_entry(drawn):
    _, figures, stairs = drawn
    acc_latency = dict(figures["front_val-acc__latency-ms_b1"])  # x: latency, y: val/acc
    assert acc_latency[INFEASIBLE_LABEL] == {(2.0, 0.90), (0.2, 0.60)}  # t00, t08 (t09 has no val/acc)
    feasible = {(1.0, 0.85), (0.5, 0.80), (0.3, 0.70), (1.5, 0.85), (1.0, 0.80), (0.5, 0.70)}  # t01-t07
    assert acc_latency["trials"] == feasible  # grey dots under the front's blue ones, as without constraints
    assert (2.0, 0.90) not in acc_latency["Pareto front"]
    assert 2.0 not in stairs["front_val-acc__latency-ms_b1"] and 0.2 not in stairs["front_val-acc__latency-ms_b1"]
    assert dict(figures["front_latency-ms_b1__model-params"])[INFEASIBLE_LABEL] == {(50_000.0, 2.0), (25_000.0, 0.2),
                                                                                   (5_000.0, 0.1)}  # t09 too here
    assert INFEASIBLE_LABEL in dict(figures["front_3d"])


def test_without_constraints_the_same_plot_has_no_greyed_series(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    labels: dict[str, list[str]] = {}
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, *a, **k: (
        labels.setdefault(path.stem, fig.axes[0].get_legend_handles_labels()[1]), save(fig, path, *a, **k))[1])
    write_report(tmp_path, study_name="free", records=make_records(), objectives=OBJECTIVES,
                 search_params=SEARCH_PARAMS, teacher_metrics=TEACHER, meta={}, metric_columns=METRIC_COLUMNS,
                 interactive=False)
    assert labels["front_val-acc__latency-ms_b1"] and INFEASIBLE_LABEL not in labels["front_val-acc__latency-ms_b1"]


def test_plotly_figures_grey_out_infeasible_trials_with_a_legend_entry(drawn):
    written, _, _ = drawn
    html = written["report_html"].read_text(encoding="utf-8")
    traces = {t.get("name"): t for t in _plotly_data(html, "plot-front_val-acc__latency-ms_b1")}
    greyed = traces[INFEASIBLE_LABEL]
    assert sorted(zip(values(greyed["x"]), values(greyed["y"]))) == [(0.2, 0.6), (2.0, 0.9)]
    assert greyed["marker"]["symbol"] == "x" and greyed.get("showlegend", True)
    assert all("trial t00" not in text and "trial t08" not in text for text in traces["trials"]["hovertext"])
    assert {re.search(r"trial (t\d+)", text)[1] for text in traces["Pareto front"]["hovertext"]} == feasible_front()
    assert 2.0 not in values(traces["front of this pair"]["x"])  # the staircase joins feasible trials only
    names = {t.get("name") for t in _plotly_data(html, "plot-front_3d")}
    assert INFEASIBLE_LABEL in names


def test_when_no_trial_is_feasible_the_report_says_so_instead_of_a_front(tmp_path):
    written = write_report(
        tmp_path, study_name="none", records=make_records(), objectives=OBJECTIVES, search_params=SEARCH_PARAMS,
        teacher_metrics=TEACHER, meta={}, metric_columns=METRIC_COLUMNS, interactive=False,
        feasibility=Feasibility((Constraint("val/acc", ">=", 0.99),), majority_rate=0.1),
    )
    md = written["report_md"].read_text(encoding="utf-8")
    assert "No trial is feasible: there is no Pareto front, no hypervolume and no suggested pick." in md
    front = md.split("## Pareto front", 1)[1].split("\n## ", 1)[0]
    assert "No trial is feasible (see 'Feasibility'): there is no front to present." in front
    assert "| trial |" not in front and "Suggested pick: trial" not in md
    assert "No suggestion: no trial is feasible." in md
    assert f"Hypervolume: {HYPERVOLUME_FORMAT.format(0.0)}." in md
    assert read_csv(written["pareto_csv"]).empty
    assert set(read_csv(written["trials_csv"])["feasible"]) == {"False"}
