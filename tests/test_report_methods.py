"""The report's method-by-method section (robust distillation side by side), from fixed records, checked by hand."""

from __future__ import annotations

import math

import pytest

from kdtune import metrics
from kdtune.records import Objective, TrialRecord
from kdtune.report import write_report
from kdtune.report._methods import method_blocks, method_summary_table

OBJECTIVES = [Objective("val/acc", "max"), Objective("val/robust_acc@0.1", "max"), Objective("latency/ms_b1", "min")]
COLUMNS = ["val/acc", "val/robust_acc@0.1", "test/acc", "test/robust_acc@0.1", "latency/ms_b1",
           "test/autoattack_acc@0.1"]
T_975_2 = 4.302652729749464  # Student's t quantile 0.975 with 2 degrees of freedom (tables)


def _repeated(trial_id: str, method: str, per_seed: dict[str, list[float]]) -> TrialRecord:
    """A member retrained over three seeds: its own (first) values plus mean and ci95 as the seeds stage adds."""
    runs = [{name: values[i] for name, values in per_seed.items()} for i in range(3)]
    summary = {metrics.SEEDS_DONE: 3.0, **metrics.seed_summary(runs)}
    return TrialRecord(trial_id, "COMPLETE", {"method.name": method}, {**runs[0], **summary})


def _single(trial_id: str, method: str, values: dict[str, float], status: str = "COMPLETE") -> TrialRecord:
    return TrialRecord(trial_id, status, {"method.name": method}, values if status == "COMPLETE" else {})


def _records() -> list[TrialRecord]:
    trades = {"val/acc": [0.90, 0.91, 0.92], "val/robust_acc@0.1": [0.60, 0.62, 0.64],
              "test/acc": [0.80, 0.82, 0.84], "test/robust_acc@0.1": [0.50, 0.50, 0.53],
              "test/autoattack_acc@0.1": [0.40, 0.45, 0.41], "test_autoattack_images/robust_acc@0.1": [0.5, 0.5, 0.5],
              "latency/ms_b1": [0.1, 0.1, 0.1]}
    hinton = {"val/acc": [0.95, 0.95, 0.95], "val/robust_acc@0.1": [0.30, 0.32, 0.31],
              "test/acc": [0.93, 0.94, 0.95], "test/robust_acc@0.1": [0.20, 0.20, 0.20],
              "test/autoattack_acc@0.1": [0.10, 0.12, 0.14], "latency/ms_b1": [0.1, 0.1, 0.1]}
    return [
        _repeated("t1", "trades", trades),
        # a better validation value, but a single seed: the repeated member is preferred
        _single("t2", "trades", {"val/acc": 0.9, "val/robust_acc@0.1": 0.9, "test/acc": 0.99}),
        _single("t3", "ard", {"val/acc": 0.88, "val/robust_acc@0.1": 0.55, "test/acc": 0.87,
                              "test/robust_acc@0.1": 0.51}),
        _single("t4", "ard", {"val/acc": 0.89, "val/robust_acc@0.1": 0.58, "test/acc": 0.86,
                              "test/robust_acc@0.1": 0.52, "test/autoattack_acc@0.1": 0.47}),
        _repeated("t5", "hinton", hinton),
        _single("t6", "rslad", {}, status="FAILED"),  # no complete rslad trial: no rslad row
    ]


def _half(values: list[float]) -> float:
    mean = sum(values) / 3
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    return T_975_2 * s / math.sqrt(3)


def test_each_method_shows_its_best_members_mean_and_interval_by_hand():
    table = method_summary_table(_records(), OBJECTIVES, eps=0.1)
    assert list(table["method"]) == ["trades", "ard", "hinton"]
    assert list(table["trial"]) == ["t1", "t4", "t5"]  # t1 over t2 (repeated); t4 over t3 (0.58 > 0.55)
    assert list(table["seeds"]) == [3, 1, 3]
    trades = table.iloc[0]
    # clean: 0.80, 0.82, 0.84 -> mean 0.82, s 0.02, half-width 4.3027 * 0.02 / sqrt(3) = 0.04968
    assert _half([0.80, 0.82, 0.84]) == pytest.approx(0.049683, abs=1e-6)
    assert trades["clean"] == "0.82 ± 0.04968"
    # PGD: 0.50, 0.50, 0.53 -> mean 0.51, s 0.017321, half-width 0.043028
    assert trades["PGD @ 0.1"] == f"0.51 ± {_half([0.50, 0.50, 0.53]):.4g}" == "0.51 ± 0.04303"
    # AutoAttack: 0.40, 0.45, 0.41 -> mean 0.42, s 0.026458, half-width 0.065724
    assert trades["AutoAttack @ 0.1"] == "0.42 ± 0.06572"
    assert trades["PGD, AutoAttack's images"] == "0.5 ± 0"  # no spread: half-width 0
    assert table.iloc[1][["clean", "PGD @ 0.1", "AutoAttack @ 0.1"]].tolist() == ["0.86", "0.52", "0.47"]
    assert table.iloc[2]["AutoAttack @ 0.1"] == "0.12 ± 0.04968"
    assert table.iloc[2]["PGD, AutoAttack's images"] == "–"  # not measured


def test_the_papers_figures_stand_beside_with_their_source():
    table = method_summary_table(_records(), OBJECTIVES, eps=0.1)
    trades, ard, hinton = (table.iloc[i] for i in range(3))
    assert trades[["paper: clean", "paper: PGD-20", "paper: AutoAttack"]].tolist() == ["0.8492", "0.5661", "0.5308"]
    assert "TRADES" in trades["paper (CIFAR-10, eps 8/255)"]
    assert ard[["paper: clean", "paper: AutoAttack"]].tolist() == ["–", "–"]
    assert "1905.09747" in ard["paper (CIFAR-10, eps 8/255)"]
    assert hinton["paper (CIFAR-10, eps 8/255)"] == "–"


def test_no_section_with_fewer_than_two_methods():
    one = [r for r in _records() if r.params["method.name"] == "trades"]
    assert method_summary_table(one, OBJECTIVES, eps=0.1).empty
    assert method_blocks(one, OBJECTIVES, COLUMNS) == []
    assert method_blocks(_records(), OBJECTIVES, COLUMNS)  # two or more: the section


def test_the_report_has_the_section_and_names_how_members_were_chosen(tmp_path):
    written = write_report(tmp_path, study_name="robust", records=_records(), objectives=OBJECTIVES,
                           search_params=["method.name"], teacher_metrics={"val/acc": 0.97, "latency/ms_b1": 1.0},
                           meta={}, metric_columns=COLUMNS, interactive=False)
    md = written["report_md"].read_text(encoding="utf-8")
    assert "## Robust distillation, method by method" in md
    assert "highest val/robust_acc@0.1" in md and "AutoAttack at eps 0.1" in md
    assert "| trades | t1 | 3 | 0.82 ± 0.04968 |" in md
    assert "not a like-for-like one" in md
