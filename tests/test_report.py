"""Tests for kdtune.report: CSVs, pareto flags, plots, knee point, importances, Markdown and self-contained
interactive HTML (tests/test_report_browser.py opens it in a real browser)."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from kdtune.errors import KdtuneError
from kdtune.records import Objective, Provenance, TrialRecord
from kdtune.report import HYPERVOLUME_FORMAT, hypervolume_of, write_report
from kdtune.report._analysis import Space, hypervolume_by_trial, knee_index, param_importances
from kdtune.pareto import front_mask
from tests.fresh_python import fresh_python

OBJECTIVES = [
    Objective("val/acc", "max"),
    Objective("latency/ms_b1", "min"),
    Objective("model/params", "min"),
]
SEARCH_PARAMS = ["method.temperature", "penalties.jacobian.weight", "student.model.hidden.0"]
METRIC_COLUMNS = [
    "val/acc", "test/acc",
    "val/robust_acc@0.05", "test/robust_acc@0.05", "test/robust_acc@0.1", "test/robust_acc@0.2",
    "val/fgsm_acc@0.1",
    "latency/ms_b1", "latency/ms_b256", "model/params", "jacobian/norm",
]
TEACHER = {
    "val/acc": 0.95, "test/acc": 0.94, "test/robust_acc@0.05": 0.7, "test/robust_acc@0.1": 0.5,
    "test/robust_acc@0.2": 0.2, "latency/ms_b1": 3.0, "latency/ms_b256": 40.0,
    "model/params": 100_000.0, "jacobian/norm": 5.0,
}
# (trial_id, val/acc, latency/ms_b1, model/params)
OBJECTIVE_VALUES = [
    ("t00", 0.90, 2.0, 50_000),  # front: best accuracy
    ("t01", 0.85, 1.0, 30_000),  # front
    ("t02", 0.80, 0.5, 20_000),  # front
    ("t03", 0.70, 0.3, 10_000),  # front: smallest
    ("t04", 0.85, 1.5, 40_000),  # dominated by t01
    ("t05", 0.80, 1.0, 30_000),  # dominated by t01
    ("t06", 0.70, 0.5, 20_000),  # dominated by t02
    ("t07", 0.85, 1.0, 30_000),  # duplicate of t01: front too
    ("t08", 0.60, 0.2, 25_000),  # front: fastest
    ("t09", math.nan, 0.1, 5_000),  # NaN objective: never on the front
]
EXPECTED_FRONT = {"t00", "t01", "t02", "t03", "t07", "t08"}
FIGURES = {"front_val-acc__latency-ms_b1", "front_val-acc__model-params", "front_latency-ms_b1__model-params",
           "front_3d", "robust_acc_vs_eps", "hypervolume_by_trial", "importance"}


def make_records() -> list[TrialRecord]:
    records = []
    for i, (trial_id, acc, latency, params) in enumerate(OBJECTIVE_VALUES):
        metrics = {m: 0.5 - 0.01 * i for m in METRIC_COLUMNS}
        metrics.update({"val/acc": acc, "latency/ms_b1": latency, "model/params": float(params),
                        "latency/ms_b256": 10 * latency, "jacobian/norm": 1.0 + i})
        params_ = {"method.temperature": 1.0 + i, "penalties.jacobian.weight": 10.0 ** -i,
                   "student.model.hidden.0": 16 * (i + 1)}
        records.append(TrialRecord(trial_id, "COMPLETE", params_, metrics))
    records.append(TrialRecord("t10", "FAILED", {"method.temperature": 2.0},
                               error="loss became NaN at epoch 2"))
    records.append(TrialRecord("t11", "FAILED", {"method.temperature": 3.0}, {"val/acc": 0.99},
                               error="CUDA out of memory, tried to allocate 2 GiB"))
    return records


def brute_force_front(records: list[TrialRecord]) -> set[str]:
    """Independent dominance check: COMPLETE trials with finite objectives, O(n^2) comparisons."""
    signs = [1.0 if o.mode == "min" else -1.0 for o in OBJECTIVES]
    losses = {}
    for r in records:
        values = [r.metrics.get(o.metric, math.nan) for o in OBJECTIVES]
        if r.status == "COMPLETE" and all(math.isfinite(v) for v in values):
            losses[r.trial_id] = [s * v for s, v in zip(signs, values)]

    def dominates(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    return {t for t, b in losses.items() if not any(dominates(a, b) for a in losses.values())}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("study") / "nested" / "report"  # created by write_report
    records = make_records()
    written = write_report(
        out_dir, study_name="demo <study>", records=records, objectives=OBJECTIVES,
        search_params=SEARCH_PARAMS, teacher_metrics=TEACHER,
        meta={"machine": "test box <cpu>", "command": "kdtune run studies/demo.yaml | tee log"},
        metric_columns=METRIC_COLUMNS, study_path="studies/my demo.yaml",
    )
    return out_dir, records, written


@pytest.fixture(scope="module")
def static_report(tmp_path_factory):
    """The same trials without plotly (PNGs in the HTML), without a study file path, and with robustness
    checks of two models that flagged nothing."""
    return write_report(
        tmp_path_factory.mktemp("static"), study_name="demo", records=make_records(), objectives=OBJECTIVES,
        search_params=SEARCH_PARAMS, teacher_metrics=TEACHER, meta={}, metric_columns=METRIC_COLUMNS,
        flags={"teacher": [], "t00": []}, interactive=False,
    )


def read_csv(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_brute_force_agrees_with_the_hand_labels():
    assert brute_force_front(make_records()) == EXPECTED_FRONT


def test_returns_everything_written(report):
    out_dir, _, written = report
    assert set(written) == {"trials_csv", "pareto_csv", "report_md", "report_html"} | FIGURES
    assert written["trials_csv"] == out_dir / "trials.csv"
    assert all(path.parent == out_dir and path.is_file() for path in written.values())


def test_trials_csv_columns_rows_and_flags(report):
    out_dir, records, _ = report
    trials = read_csv(out_dir / "trials.csv")
    assert list(trials.columns) == ["trial_id", "status", "epochs", "sweep_s", *SEARCH_PARAMS, *METRIC_COLUMNS, "error",
                                    "feasible", "pareto"]
    assert trials["trial_id"].tolist() == [r.trial_id for r in records]
    front = set(trials.loc[trials["pareto"] == "True", "trial_id"])
    assert front == brute_force_front(records) == EXPECTED_FRONT
    assert set(trials["pareto"]) == {"True", "False"}
    assert trials.loc[trials["trial_id"] == "t01", "student.model.hidden.0"].item() == "32"


def test_failed_trials_in_trials_csv(report):
    out_dir, records, _ = report
    trials = read_csv(out_dir / "trials.csv").set_index("trial_id")
    for r in records:
        row = trials.loc[r.trial_id]
        if r.status == "FAILED":
            assert row["status"] == "FAILED"
            assert row["error"] == r.error
            assert row["pareto"] == "False"
            assert all(row[m] == "" for m in METRIC_COLUMNS)  # t11's partial val/acc is not shown
        else:
            assert row["status"] == "COMPLETE" and row["error"] == ""
    assert trials.loc["t09", "val/acc"] == ""  # NaN is written empty
    assert trials.loc["t09", "pareto"] == "False"


def test_pareto_csv_is_the_front(report):
    out_dir, _, _ = report
    trials = read_csv(out_dir / "trials.csv")
    pareto = read_csv(out_dir / "pareto.csv")
    assert list(pareto.columns) == list(trials.columns)
    assert set(pareto["trial_id"]) == EXPECTED_FRONT and len(pareto) == len(EXPECTED_FRONT)
    pd.testing.assert_frame_equal(
        pareto.reset_index(drop=True),
        trials[trials["pareto"] == "True"].reset_index(drop=True),
    )


def test_plots_are_real_pngs(report):
    _, _, written = report
    plots = {name: path for name, path in written.items() if name in FIGURES}
    assert len([name for name in plots if name.startswith("front_") and name != "front_3d"]) == 3  # one per pair
    for path in plots.values():
        assert path.suffix == ".png" and path.stat().st_size > 5_000
        image = imread(path)
        assert image.shape[0] >= 200 and image.shape[1] >= 200
        assert np.asarray(image).std() > 0  # not a blank canvas


def test_report_md(report):
    out_dir, records, written = report
    md = (out_dir / "report.md").read_text(encoding="utf-8")
    hv = hypervolume_of(records, OBJECTIVES, TEACHER)
    assert 0.0 < hv < 1.0
    assert f"Hypervolume: {HYPERVOLUME_FORMAT.format(hv)}" in md
    assert "reference 0" in md and "reference 1" in md  # the convention is stated
    assert md.startswith("# kdtune report: demo <study>")
    assert "test box <cpu>" in md
    for name, path in written.items():
        if name in FIGURES:
            assert f"]({path.name})" in md  # relative links (the PNG fallbacks of the HTML's figures)
    assert str(out_dir) not in md
    assert "CUDA out of memory, tried to allocate 2 GiB" in md and "loss became NaN at epoch 2" in md
    assert "t09 (" in md  # the NaN-objective trial is called out
    all_trials = md.split("## All trials", 1)[1].split("\n## ", 1)[0]
    table_rows = [line for line in all_trials.splitlines() if line.startswith("| ")]
    assert table_rows[1].startswith("| teacher |")  # header, then the teacher
    assert "robust acc ε=0.2 (test)" in table_rows[0]
    header = [cell.strip() for cell in table_rows[0].split("|")[1:-1]]
    assert [h for h in header if h in SEARCH_PARAMS] == SEARCH_PARAMS  # each row names its hyperparameters
    # Complete trials only, best validation accuracy first.
    assert [row.split("|")[1].strip() for row in table_rows[2:]][:2] == ["t00", "t01"]
    assert len(table_rows) == 1 + 1 + 10


def _outside_scripts(html: str) -> str:
    return re.sub(r"<script\b[^>]*>.*?</script>", "<script></script>", html, flags=re.DOTALL)


def test_report_html_is_self_contained_and_escaped(report):
    out_dir, _, _ = report
    html = (out_dir / "report.html").read_text(encoding="utf-8")
    markup = _outside_scripts(html)
    assert not re.search(r'(src|href)\s*=\s*"?\s*(https?:)?//', markup)
    assert not re.search(r"<script[^>]*\bsrc\s*=", html) and "<link" not in markup and "<iframe" not in markup
    assert html.count("* plotly.js v") == 1  # the bundle, embedded once in the head
    assert html.index("* plotly.js v") < html.index("</head>")
    assert 'src="data:image/png;base64,' not in markup  # figures are interactive, not PNGs
    assert "demo &lt;study&gt;" in markup and "demo <study>" not in markup
    assert "test box &lt;cpu&gt;" in html
    assert "loss became NaN at epoch 2" in html
    hv = hypervolume_of(make_records(), OBJECTIVES, TEACHER)
    assert HYPERVOLUME_FORMAT.format(hv) in html


def test_report_html_has_one_plot_div_per_figure(report):
    _, _, written = report
    html = written["report_html"].read_text(encoding="utf-8")
    ids = re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', html)
    assert sorted(ids) == sorted(f"plot-{name}" for name in FIGURES)
    assert len(re.findall(r'Plotly\.newPlot\(\s*"plot-', html)) == len(FIGURES)


def _plotly_data(html: str, div_id: str) -> list[dict]:
    """The traces passed to Plotly.newPlot for one div."""
    import json

    call = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', html)
    data, _ = json.JSONDecoder().raw_decode(html, call.end())
    return data


def test_interactive_figures_have_the_white_template_and_leave_plotlys_default_alone(report):
    import json

    import plotly
    import plotly.io as pio

    _, _, written = report
    html = written["report_html"].read_text(encoding="utf-8")
    want = json.loads(json.dumps(pio.templates["plotly_white"].to_plotly_json(), cls=plotly.utils.PlotlyJSONEncoder))
    decoder = json.JSONDecoder()
    for div_id in re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', html):
        call = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', html)
        _, end = decoder.raw_decode(html, call.end())  # the traces, then the layout
        layout, _ = decoder.raw_decode(html, html.index("{", end))
        assert layout["template"] == want, div_id
    assert pio.templates.default == "plotly"  # set only while each figure is created


def test_hover_shows_trial_hyperparameters_and_objectives(report):
    _, _, written = report
    html = written["report_html"].read_text(encoding="utf-8")
    traces = {t.get("name"): t for t in _plotly_data(html, "plot-front_val-acc__latency-ms_b1")}
    front = traces["Pareto front"]
    assert len(front["hovertext"]) == len(EXPECTED_FRONT) and front["hoverinfo"] == "text"
    t01 = next(text for text in front["hovertext"] if "trial t01" in text)
    assert "method.temperature = 2" in t01 and "penalties.jacobian.weight = 0.1" in t01
    assert "student.model.hidden.0 = 32" in t01
    assert "val/acc</i> = 0.85" in t01 and "latency/ms_b1</i> = 1" in t01 and "model/params</i> = 30,000" in t01
    assert traces["teacher"]["x"] == [TEACHER["latency/ms_b1"]]
    assert len(traces["trials"]["hovertext"]) == 3  # t04, t05, t06; t09 has no val/acc
    for div_id in ("plot-front_3d", "plot-hypervolume_by_trial", "plot-robust_acc_vs_eps"):
        hovers = [text for t in _plotly_data(html, div_id) for text in t.get("hovertext") or []]
        assert any("penalties.jacobian.weight = " in text for text in hovers), div_id


def test_single_objective_writes_no_plots(tmp_path):
    written = write_report(
        tmp_path, study_name="one", records=make_records(), objectives=OBJECTIVES[:1],
        search_params=SEARCH_PARAMS, teacher_metrics={}, meta={}, metric_columns=METRIC_COLUMNS,
    )
    assert not [name for name in written if name.startswith("front_")]
    assert "A single objective: no pairwise plots." in written["report_md"].read_text(encoding="utf-8")
    trials = read_csv(written["trials_csv"])
    assert trials.loc[trials["pareto"] == "True", "trial_id"].tolist() == ["t00"]


@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
def test_unwritable_out_dir_raises_one_line(tmp_path, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    out_dir = blocker / "report" if where == "under_a_file" else blocker
    with pytest.raises(KdtuneError) as info:
        write_report(
            out_dir, study_name="x", records=make_records(), objectives=OBJECTIVES,
            search_params=SEARCH_PARAMS, teacher_metrics=TEACHER, meta={},
            metric_columns=METRIC_COLUMNS,
        )
    message = str(info.value)
    assert "\n" not in message and str(out_dir) in message


def test_robustness_flags_and_autoattack_are_reported(tmp_path):
    records = [TrialRecord(r.trial_id, r.status, r.params, {**r.metrics, "test/autoattack_acc@0.1": 0.25}, r.error)
               if r.trial_id in EXPECTED_FRONT else r for r in make_records()]
    flags = {"teacher": [], "t01": ["PGD weaker than FGSM at eps=0.1: <b>0.5</b> > 0.4", "second violation"],
             "t02": []}
    written = write_report(
        tmp_path, study_name="aa", records=records, objectives=OBJECTIVES, search_params=SEARCH_PARAMS,
        teacher_metrics={**TEACHER, "test/autoattack_acc@0.1": 0.125}, meta={},
        metric_columns=[*METRIC_COLUMNS, "test/autoattack_acc@0.1"], flags=flags,
    )
    assert read_csv(written["trials_csv"]).columns[-4] == "test/autoattack_acc@0.1"
    md = written["report_md"].read_text(encoding="utf-8")
    front = md.split("## Pareto front", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in front.splitlines() if line.startswith("| trial |"))
    assert "test/autoattack_acc@0.1" in header and "| 0.25 |" in front
    all_trials = md.split("## All trials", 1)[1].split("\n## ", 1)[0]
    assert "AutoAttack acc ε=0.1 (test)" in all_trials and "| teacher |" in all_trials and "0.125" in all_trials
    section = md.split("## Robustness sanity checks", 1)[1].split("\n## ", 1)[0]
    assert "1 of 3 models flagged" in section
    assert "| t01 | PGD weaker than FGSM at eps=0.1: <b>0.5</b> > 0.4 |" in section
    assert "| t01 | second violation |" in section and "| teacher |" not in section
    html = written["report_html"].read_text(encoding="utf-8")
    assert "Robustness sanity checks" in html
    assert "&lt;b&gt;0.5&lt;/b&gt; &gt; 0.4" in html and "<b>0.5</b>" not in html


def test_robustness_section_only_when_checked(report, static_report):
    out_dir, _, _ = report  # no flags given
    assert "Robustness sanity checks" not in (out_dir / "report.md").read_text(encoding="utf-8")
    md = static_report["report_md"].read_text(encoding="utf-8")  # two models checked, none flagged
    assert "None flagged: all 2 models pass." in md.split("## Robustness sanity checks", 1)[1]
    assert list(read_csv(static_report["trials_csv"]).columns) == list(read_csv(out_dir / "trials.csv").columns)


def test_source_comparison_shows_matching_trials_next_to_the_source(tmp_path):
    from kdtune.records import Reference, ReferenceRow

    records = [
        TrialRecord("a", "COMPLETE", {"method.name": "hinton"}, {"val/acc": 0.9, "test/acc": 0.91}),
        TrialRecord("b", "COMPLETE", {"method.name": "hinton"}, {"val/acc": 0.95, "test/acc": 0.93}),
        TrialRecord("c", "COMPLETE", {"method.name": "ce"}, {"val/acc": 0.8, "test/acc": 0.82}),
        TrialRecord("d", "FAILED", {"method.name": "tfkd_reg"}, error="boom"),
    ]
    reference = Reference("Paper, Table 1 (full MNIST there, 5k subset here)", [
        ReferenceRow("teacher", {"test/acc": 0.99}, teacher=True),
        ReferenceRow("KD", {"test/acc": 0.987}, {"method.name": "hinton"}),
        ReferenceRow("no KD", {"test/acc": 0.98}, {"method.name": "ce"}),
        ReferenceRow("Tf-KD", {"test/acc": 0.97}, {"method.name": "tfkd_reg"}),
    ])
    objectives = [Objective("val/acc", "max")]
    write_report(tmp_path, study_name="ref", records=records, objectives=objectives,
                 search_params=["method.name"], teacher_metrics={"test/acc": 0.985}, meta={},
                 metric_columns=["val/acc", "test/acc"], reference=reference)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    section = md.split("## Against the source", 1)[1].split("\n## ", 1)[0]
    assert "full MNIST there, 5k subset here" in section
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in section.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["teacher"][-2:] == ["0.985", "0.99"]
    assert rows["KD"][1:] == ["b", "2", "0.93", "0.987"]  # the best of two matching trials by val/acc
    assert rows["no KD"][1:] == ["c", "1", "0.82", "0.98"]
    assert rows["Tf-KD"][1:] == ["–", "0", "–", "0.97"]  # failed trials never stand in for a result
    assert "Against the source" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_report_says_what_each_student_learned_from(tmp_path):
    synthetic = Provenance.from_dict({"method": "noise", "transfer_set": "synthetic", "n": "2000",
                                      "from_real_data": "nothing"})
    real = Provenance("hinton", "training split", "training images")
    records = [
        TrialRecord("a", "COMPLETE", {}, {"val/acc": 0.2}, provenance=synthetic),
        TrialRecord("b", "COMPLETE", {}, {"val/acc": 0.9}, provenance=real),
        TrialRecord("c", "COMPLETE", {}, {"val/acc": 0.3}, provenance=synthetic),
    ]
    write_report(tmp_path, study_name="p", records=records, objectives=[Objective("val/acc", "max")],
                 search_params=[], teacher_metrics={}, meta={}, metric_columns=["val/acc"])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    section = md.split("## What each student learned from", 1)[1].split("\n## ", 1)[0]
    assert "| noise | synthetic, 2000 examples | nothing | a, c |" in section
    assert "| hinton | training split | training images | b |" in section


ACC_LATENCY = [Objective("val/acc", "max"), Objective("latency/ms_b1", "min")]


def _front_records(points: list[tuple[str, float, float]]) -> list[TrialRecord]:
    return [TrialRecord(t, "COMPLETE", {"lr": 0.1 * (i + 1)}, {"val/acc": acc, "latency/ms_b1": ms})
            for i, (t, acc, ms) in enumerate(points)]


def test_knee_is_the_front_member_closest_to_the_ideal_point():
    # Teacher latency 10 ms: normalized (acc, ms / 10); ideal (1, 0).
    records = _front_records([
        ("accurate", 0.99, 9.0),  # gaps (0.01, 0.9): distance 0.90
        ("knee", 0.90, 2.0),  # gaps (0.1, 0.2): 0.224
        ("fast", 0.50, 0.5),  # gaps (0.5, 0.05): 0.502
        ("dominated", 0.85, 3.0),  # dominated by "knee": never the pick
    ])
    space = Space.of(records, ACC_LATENCY, {"latency/ms_b1": 10.0})
    front = front_mask(records, ACC_LATENCY)
    assert front.tolist() == [True, True, True, False]
    assert records[knee_index(space, front)].trial_id == "knee"
    assert space.distances()[1] == pytest.approx(math.hypot(0.1, 0.2))


def test_knee_ties_go_to_the_better_first_objective():
    records = _front_records([("second", 0.6, 3.0), ("first", 0.7, 4.0)])  # both at distance 0.5
    space = Space.of(records, ACC_LATENCY, {"latency/ms_b1": 10.0})
    assert records[knee_index(space, front_mask(records, ACC_LATENCY))].trial_id == "first"


def test_no_knee_without_a_front():
    records = [TrialRecord("x", "FAILED", error="boom")]
    space = Space.of(records, ACC_LATENCY, {"latency/ms_b1": 10.0})
    assert knee_index(space, front_mask(records, ACC_LATENCY)) is None


def test_suggested_pick_is_named_at_the_top_and_in_its_section(report):
    _, records, written = report
    md = written["report_md"].read_text(encoding="utf-8")
    space = Space.of(records, OBJECTIVES, TEACHER)
    knee = records[knee_index(space, front_mask(records, OBJECTIVES))].trial_id
    assert knee == "t02"  # normalized distances: t02 0.328, t03 0.332, t01 0.473, ...
    top = md.split("## ", 1)[0]
    assert "Suggested pick: trial t02 — " in top and "python -m kdtune rerun 'studies/my demo.yaml' t02" in top
    section = md.split("## Suggested pick", 1)[1].split("\n## ", 1)[0]
    assert "closest (Euclidean distance) to the ideal point" in section  # the definition
    assert "Closest to the ideal point: t02 (0.328), t03 (0.332)" in section
    front = md.split("## Pareto front", 1)[1].split("\n## ", 1)[0]
    t02 = next(line for line in front.splitlines() if line.startswith("| t02 |"))
    assert "(suggested pick)" in t02


def test_front_rows_keep_shares_of_the_teacher_and_a_rerun_command(report, static_report):
    _, _, written = report
    md = written["report_md"].read_text(encoding="utf-8")
    front = md.split("## Pareto front", 1)[1].split("\n## ", 1)[0]
    header = [c.strip() for c in next(l for l in front.splitlines() if l.startswith("| trial |")).split("|")[1:-1]]
    rows = {line.split("|")[1].strip(): dict(zip(header, (c.strip() for c in line.split("|")[1:-1])))
            for line in front.splitlines() if line.startswith("| t0")}
    assert set(rows) == EXPECTED_FRONT
    t01 = rows["t01"]
    assert [t01[p] for p in SEARCH_PARAMS] == ["2", "0.1", "32"]
    assert t01["val/acc"] == "0.85" and t01["test/acc"] == "0.49" and t01["model/params"] == "30,000"
    assert t01["latency/ms_b256"] == "10"
    assert t01["% of teacher test/acc"] == "52.1%"  # 0.49 / 0.94
    assert t01["% of teacher test/robust_acc@0.05"] == "70.0%"  # 0.49 / 0.7: no robust objective, smallest eps
    assert t01["rerun"] == "`python -m kdtune rerun 'studies/my demo.yaml' t01`"
    html = written["report_html"].read_text(encoding="utf-8")
    assert "<code>python -m kdtune rerun &#39;studies/my demo.yaml&#39; t01</code>" in html
    assert "`python -m kdtune rerun demo t01`" in static_report["report_md"].read_text(encoding="utf-8")


def test_robust_share_follows_a_robust_objective(tmp_path):
    objectives = [Objective("val/acc", "max"), Objective("val/robust_acc@0.1", "max")]
    records = [TrialRecord("a", "COMPLETE", {}, {"val/acc": 0.9, "val/robust_acc@0.1": 0.4, "test/acc": 0.9,
                                                  "test/robust_acc@0.05": 0.6, "test/robust_acc@0.1": 0.3})]
    written = write_report(tmp_path, study_name="r", records=records, objectives=objectives, search_params=[],
                           teacher_metrics={"test/acc": 0.9, "test/robust_acc@0.1": 0.6}, meta={},
                           metric_columns=["val/acc", "test/acc", "test/robust_acc@0.05", "test/robust_acc@0.1"])
    md = written["report_md"].read_text(encoding="utf-8")
    assert "| % of teacher test/acc | % of teacher test/robust_acc@0.1 |" in md
    assert "| 100.0% | 50.0% |" in md


def test_hypervolume_by_trial_grows_to_the_reported_value(report):
    _, records, written = report
    history = hypervolume_by_trial(Space.of(records, OBJECTIVES, TEACHER), len(records))
    assert len(history) == len(records)
    assert (np.diff(history) >= 0).all()
    assert history[-1] == pytest.approx(hypervolume_of(records, OBJECTIVES, TEACHER))
    assert history[-1] == history[-2] == history[-3]  # t10 and t11 failed: no gain
    assert history[0] == pytest.approx(hypervolume_of(records[:1], OBJECTIVES, TEACHER))
    md = written["report_md"].read_text(encoding="utf-8")
    assert "last grew at trial #9 of 12 (t08)" in md and "](hypervolume_by_trial.png)" in md


def test_importances_for_each_objective(report):
    _, records, written = report
    found = param_importances(records, OBJECTIVES, SEARCH_PARAMS)
    assert set(found.values) == {o.metric for o in OBJECTIVES}
    for importances in found.values.values():
        assert set(importances) == set(SEARCH_PARAMS)
        assert sum(importances.values()) == pytest.approx(1.0)
        assert all(v >= 0 for v in importances.values())
    assert found == param_importances(records, OBJECTIVES, SEARCH_PARAMS)  # seeded: reproducible
    md = written["report_md"].read_text(encoding="utf-8")
    section = md.split("## Hyperparameter importance", 1)[1].split("\n## ", 1)[0]
    assert "fANOVA" in section and "](importance.png)" in section


def test_importance_distributions_are_inferred():
    records = [TrialRecord(f"t{i}", "COMPLETE",
                           {"lr": 10.0 ** -i, "width": 8 * (i + 1), "method": ["kd", "ce"][i % 2],
                            "adv": i % 2 == 0, "fixed": 3, **({"temperature": 1.0 + i} if i % 2 else {})},
                           {"val/acc": 0.5 + 0.1 * i - 0.05 * (i % 2), "latency/ms_b1": 1.0 + (i % 3)})
               for i in range(6)]
    found = param_importances(records, ACC_LATENCY, ["lr", "width", "method", "adv", "fixed", "temperature"])
    assert set(found.values["val/acc"]) == {"lr", "width", "method", "adv"}
    assert "conditional): temperature" in found.note and "single value: fixed" in found.note


@pytest.mark.parametrize("case", ["too_few_trials", "one_value"])
def test_importance_is_skipped_with_a_note(tmp_path, case):
    n = 3 if case == "too_few_trials" else 6
    records = [TrialRecord(f"t{i}", "COMPLETE", {"lr": 0.1 if case == "one_value" else 0.1 * i},
                           {"val/acc": 0.5 + 0.05 * i, "latency/ms_b1": 1.0 + i}) for i in range(n)]
    written = write_report(tmp_path, study_name="few", records=records, objectives=ACC_LATENCY,
                           search_params=["lr"], teacher_metrics={"latency/ms_b1": 10.0}, meta={},
                           metric_columns=["val/acc", "latency/ms_b1"])
    assert "importance" not in written
    md = written["report_md"].read_text(encoding="utf-8")
    section = md.split("## Hyperparameter importance", 1)[1].split("\n## ", 1)[0]
    expected = "3 complete trials with finite objectives (at least 4 needed)" if n == 3 else "single value: lr"
    assert "Not estimated" in section and expected in section
    assert "No test robust accuracies" in md  # no robust metrics: no curves, said so
    assert 'id="plot-importance"' not in written["report_html"].read_text(encoding="utf-8")


def test_html_without_plotly_uses_the_pngs(static_report):
    html = static_report["report_html"].read_text(encoding="utf-8")
    assert "<script" not in html and "plotly-graph-div" not in html
    assert html.count('src="data:image/png;base64,') == len(FIGURES)


def test_front_members_repeated_over_seeds_show_mean_and_interval(tmp_path):
    metrics = {"val/acc": 0.9, "val/acc/mean": 0.91, "val/acc/ci95": 0.012, "test/acc": 0.9,
               "test/acc/mean": 0.905, "test/acc/ci95": 0.02, "seeds/n": 3.0}
    records = [TrialRecord("s1", "COMPLETE", {}, metrics), TrialRecord("s2", "COMPLETE", {}, {"val/acc": 0.5})]
    write_report(tmp_path, study_name="s", records=records, objectives=[Objective("val/acc", "max")],
                 search_params=[], teacher_metrics={}, meta={}, metric_columns=["val/acc", "test/acc"])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    section = md.split("## Over seeds", 1)[1].split("\n## ", 1)[0]
    assert "retrained with 3 seeds" in section
    assert "| s1 | 3 | 0.91 ± 0.012 | 0.905 ± 0.02 |" in section and "s2" not in section
    assert "| val/acc | 1 | s1 | 0.91 ± 0.012 | best |" in section  # the noise table ranks the one member


def _repeated(trial_id: str, mean: float, ci: float) -> TrialRecord:
    return TrialRecord(trial_id, "COMPLETE", {}, {"val/acc": mean, "val/acc/mean": mean, "val/acc/ci95": ci,
                                                  "latency/ms_b1": 1.0, "latency/ms_b1/mean": 1.0,
                                                  "latency/ms_b1/ci95": 0.0, "seeds/n": 3.0})


def test_members_whose_intervals_overlap_are_marked_within_noise(tmp_path):
    from kdtune.report._noise import noise_table

    # 0.90 ± 0.01 = [0.89, 0.91]; 0.895 ± 0.01 overlaps it; 0.85 ± 0.01 = [0.84, 0.86] overlaps neither
    records = [_repeated("b", 0.895, 0.01), _repeated("c", 0.85, 0.01), _repeated("a", 0.90, 0.01)]
    table = noise_table(records, [Objective("val/acc", "max")])
    rows = [tuple(r) for r in table[["trial", "vs the best", "vs the one above"]].itertuples(index=False)]
    assert rows == [("a", "best", "–"), ("b", "within noise", "within noise"),
                    ("c", "worse, beyond noise", "worse, beyond noise")]
    # a "min" objective ranks the lowest first
    lat = noise_table([_repeated("x", 0.5, 0.1)], [Objective("latency/ms_b1", "min")])
    assert lat["vs the best"].tolist() == ["best"]
    write_report(tmp_path, study_name="noise", records=records, objectives=[Objective("val/acc", "max")],
                 search_params=[], teacher_metrics={}, meta={}, metric_columns=["val/acc"])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| val/acc | 3 | c | 0.85 ± 0.01 | worse, beyond noise | worse, beyond noise |" in md


def test_the_ablation_table_gives_the_paired_difference_and_its_verdict(tmp_path):
    from kdtune.records import Ablation

    # val/acc: distilled 0.90, 0.92, 0.94 against ce 0.88, 0.89, 0.90: differences 0.02, 0.03, 0.04, mean 0.03,
    # sd 0.01, t(0.975, 2) = 4.3027: half-width 4.3027 * 0.01 / sqrt(3) = 0.02484 -> [0.0052, 0.0548]: paid
    # latency: differences +0.1, -0.1, 0: mean 0, the interval holds 0: within noise
    distilled = [{"val/acc": a, "latency/ms_b1": ms} for a, ms in [(0.90, 1.1), (0.92, 0.9), (0.94, 1.0)]]
    plain = [{"val/acc": a, "latency/ms_b1": 1.0} for a in (0.88, 0.89, 0.90)]
    ablation = {"t1": Ablation("t1", [0, 1, 2], distilled, plain)}
    diff = ablation["t1"].difference("val/acc")
    assert diff.mean == pytest.approx(0.03) and diff.half_width == pytest.approx(4.302653 * 0.01 / 3 ** 0.5)
    records = [TrialRecord("t1", "COMPLETE", {}, {"val/acc": 0.9, "latency/ms_b1": 1.1})]
    objectives = [Objective("val/acc", "max"), Objective("latency/ms_b1", "min")]
    write_report(tmp_path, study_name="abl", records=records, objectives=objectives, search_params=[],
                 teacher_metrics={}, meta={}, metric_columns=["val/acc", "latency/ms_b1"], ablation=ablation)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    section = md.split("## Did distillation pay?", 1)[1].split("\n## ", 1)[0]
    assert "| t1 | val/acc | 3 | 0.92 ± 0.04968 | 0.89 ± 0.02484 | 0.03 ± 0.02484 | distillation paid |" in section
    assert "| t1 | latency/ms_b1 | 3 |" in section and "within noise: a plain model did as well" in section
    # worse without overlap of 0 -> "cost"; a "min" objective that grew is a cost too
    worse = Ablation("t2", [0, 1, 2], plain, distilled)
    from kdtune.report._noise import ablation_table

    verdicts = ablation_table({"t2": worse}, objectives, ["val/acc"])["verdict"].tolist()
    assert verdicts == ["distillation cost", "within noise: a plain model did as well"]


def test_front_plots_get_error_bars_when_members_were_repeated_over_seeds(tmp_path):
    from kdtune.report._plots import seed_error_bars

    repeated = {"val/acc": 0.9, "latency/ms_b1": 0.03, "val/acc/mean": 0.91, "val/acc/ci95": 0.01,
                "latency/ms_b1/mean": 0.031, "latency/ms_b1/ci95": 0.002, "seeds/n": 3.0}
    records = [TrialRecord("s1", "COMPLETE", {}, repeated),
               TrialRecord("s2", "COMPLETE", {}, {"val/acc": 0.8, "latency/ms_b1": 0.02})]
    bars = seed_error_bars(records, "latency/ms_b1", "val/acc")
    assert bars.shape == (4, 1) and list(bars[:, 0]) == [0.031, 0.91, 0.002, 0.01]
    assert seed_error_bars(records[1:], "latency/ms_b1", "val/acc") is None
    objectives = [Objective("val/acc", "max"), Objective("latency/ms_b1", "min")]
    write_report(tmp_path, study_name="bars", records=records, objectives=objectives, search_params=[],
                 teacher_metrics={}, meta={}, metric_columns=["val/acc", "latency/ms_b1"])
    traces = _plotly_data((tmp_path / "report.html").read_text(encoding="utf-8"), "plot-front_val-acc__latency-ms_b1")
    # decoded, not searched for in the page: plotly writes "±" as \u00b1 unless orjson is installed
    bars_trace = next(t for t in traces if t.get("name") == "mean over seeds ± 95%")
    assert bars_trace["error_x"]["type"] == bars_trace["error_y"]["type"] == "data"


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_preload_report_leaves_no_import_for_the_report(tmp_path):
    """``preload_report`` (run during the sweep, in the process that will draw the report) imports every
    library the report needs, so the report after the sweep imports none: checked in a fresh process."""
    lines = fresh_python(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from kdtune.report import preload_report, write_report
        from test_report import METRIC_COLUMNS, OBJECTIVES, SEARCH_PARAMS, TEACHER, make_records
        preload_report()
        before = set(sys.modules)
        write_report(Path({str(tmp_path)!r}), study_name="s", records=make_records(), objectives=OBJECTIVES,
                     search_params=SEARCH_PARAMS, teacher_metrics=TEACHER, meta={{}}, metric_columns=METRIC_COLUMNS)
        print(sorted({{m.split(".")[0] for m in set(sys.modules) - before}}))
    """, timeout_s=300)
    assert (tmp_path / "importance.png").exists()  # the fANOVA importances, whose imports are the heaviest
    imported = ast.literal_eval(lines[-1])
    assert not set(imported) & {"matplotlib", "plotly", "jinja2", "optuna", "sklearn", "scipy", "PIL"}, imported


def test_front_members_link_their_onnx_files_and_latency_shows_its_spread(tmp_path):
    objectives = [Objective("val/acc", "max"), Objective("latency/ms_b1", "min")]
    columns = ["val/acc", "latency/ms_b1", "latency/spread_ms_b1", "model/onnx_max_abs_diff"]
    records = [TrialRecord(t, "COMPLETE", {}, {"val/acc": acc, "latency/ms_b1": ms, "latency/spread_ms_b1": ms / 10,
                                                "model/onnx_max_abs_diff": 1e-7})
               for t, acc, ms in (("fast", 0.8, 0.01), ("good", 0.9, 0.02), ("worse", 0.7, 0.03))]
    written = write_report(tmp_path, study_name="o", records=records, objectives=objectives, search_params=[],
                           teacher_metrics={"val/acc": 0.95, "latency/ms_b1": 0.1, "latency/spread_ms_b1": 0.004},
                           meta={}, metric_columns=columns, interactive=False,
                           onnx_files={"fast": "onnx/fast.onnx", "good": "onnx/good.onnx"},
                           teacher_onnx="onnx/teacher.onnx")
    md = written["report_md"].read_text(encoding="utf-8")
    front = md.split("## Pareto front", 1)[1].split("\n## ", 1)[0]
    header = [c.strip() for c in next(l for l in front.splitlines() if l.startswith("| trial |")).split("|")[1:-1]]
    rows = {line.split("|")[1].strip(): dict(zip(header, (c.strip() for c in line.split("|")[1:-1])))
            for line in front.splitlines() if line.startswith(("| fast", "| good"))}
    assert rows["fast"]["ONNX file"] == "[onnx/fast.onnx](onnx/fast.onnx)"
    assert rows["good"]["latency/spread_ms_b1"] == "0.002" and rows["good"]["latency/ms_b1"] == "0.02"
    assert "The teacher as ONNX, as its latency was timed: onnx/teacher.onnx" in md
    trials = md.split("## All trials", 1)[1].split("\n## ", 1)[0]
    assert "| latency ms (batch 1) | ± spread ms (batch 1) |" in trials and "| 0.1 | 0.004 |" in trials
    html = written["report_html"].read_text(encoding="utf-8")
    assert '<a href="onnx/good.onnx">onnx/good.onnx</a>' in html and "worse.onnx" not in html
