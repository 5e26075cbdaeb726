"""Tests for kdtune.report: CSVs, pareto flags, plots, Markdown and self-contained HTML."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from kdtune.errors import KdtuneError
from kdtune.records import Objective, TrialRecord
from kdtune.report import HYPERVOLUME_FORMAT, hypervolume_of, write_report

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
        metric_columns=METRIC_COLUMNS,
    )
    return out_dir, records, written


def read_csv(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_brute_force_agrees_with_the_hand_labels():
    assert brute_force_front(make_records()) == EXPECTED_FRONT


def test_returns_everything_written(report):
    out_dir, _, written = report
    plot_names = {"front_val-acc__latency-ms_b1", "front_val-acc__model-params",
                  "front_latency-ms_b1__model-params"}
    assert set(written) == {"trials_csv", "pareto_csv", "report_md", "report_html"} | plot_names
    assert written["trials_csv"] == out_dir / "trials.csv"
    assert all(path.parent == out_dir and path.is_file() for path in written.values())


def test_trials_csv_columns_rows_and_flags(report):
    out_dir, records, _ = report
    trials = read_csv(out_dir / "trials.csv")
    assert list(trials.columns) == ["trial_id", "status", *SEARCH_PARAMS, *METRIC_COLUMNS, "error", "pareto"]
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
    plots = {name: path for name, path in written.items() if name.startswith("front_")}
    assert len(plots) == 3  # one per pair of objectives
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
        if name.startswith("front_"):
            assert f"]({path.name})" in md  # relative links
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


def test_report_html_is_self_contained_and_escaped(report):
    out_dir, _, written = report
    html = (out_dir / "report.html").read_text(encoding="utf-8")
    assert not re.search(r'(src|href)\s*=\s*"\s*(https?:)?//', html)
    assert "<script" not in html and "<link" not in html
    assert html.count('src="data:image/png;base64,') == 3
    assert "demo &lt;study&gt;" in html and "demo <study>" not in html
    assert "test box &lt;cpu&gt;" in html
    assert "loss became NaN at epoch 2" in html
    hv = hypervolume_of(make_records(), OBJECTIVES, TEACHER)
    assert HYPERVOLUME_FORMAT.format(hv) in html


def test_single_objective_writes_no_plots(tmp_path):
    written = write_report(
        tmp_path, study_name="one", records=make_records(), objectives=OBJECTIVES[:1],
        search_params=SEARCH_PARAMS, teacher_metrics={}, meta={}, metric_columns=METRIC_COLUMNS,
    )
    assert not [name for name in written if name.startswith("front_")]
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
    assert read_csv(written["trials_csv"]).columns[-3] == "test/autoattack_acc@0.1"
    md = written["report_md"].read_text(encoding="utf-8")
    front = md.split("## Pareto front", 1)[1].split("\n## ", 1)[0]
    assert "test/autoattack_acc@0.1" in front.splitlines()[2] and "| 0.25 |" in front
    all_trials = md.split("## All trials", 1)[1].split("\n## ", 1)[0]
    assert "AutoAttack acc ε=0.1 (test)" in all_trials and "| teacher |" in all_trials and "0.125" in all_trials
    section = md.split("## Robustness sanity checks", 1)[1].split("\n## ", 1)[0]
    assert "1 of 3 models flagged" in section
    assert "| t01 | PGD weaker than FGSM at eps=0.1: <b>0.5</b> > 0.4 |" in section
    assert "| t01 | second violation |" in section and "| teacher |" not in section
    html = written["report_html"].read_text(encoding="utf-8")
    assert "Robustness sanity checks" in html
    assert "&lt;b&gt;0.5&lt;/b&gt; &gt; 0.4" in html and "<b>0.5</b>" not in html


def test_robustness_section_only_when_checked(report, tmp_path):
    out_dir, _, _ = report
    assert "Robustness sanity checks" not in (out_dir / "report.md").read_text(encoding="utf-8")
    written = write_report(
        tmp_path, study_name="clean", records=make_records(), objectives=OBJECTIVES, search_params=SEARCH_PARAMS,
        teacher_metrics=TEACHER, meta={}, metric_columns=METRIC_COLUMNS, flags={"teacher": [], "t00": []},
    )
    md = written["report_md"].read_text(encoding="utf-8")
    assert "None flagged: all 2 models pass." in md.split("## Robustness sanity checks", 1)[1]
    assert list(read_csv(written["trials_csv"]).columns) == list(read_csv(out_dir / "trials.csv").columns)


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
    synthetic = {"method": "noise", "transfer_set": "synthetic", "n": "2000", "from_real_data": "nothing"}
    real = {"method": "hinton", "transfer_set": "training split", "from_real_data": "training images"}
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
