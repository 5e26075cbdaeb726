"""The report's cost part: the hypervolume against cumulative trial-epochs and wall-clock seconds of sweeping,
checked against hypervolumes of the finished trials recomputed trial by trial."""

from __future__ import annotations

import dataclasses
import re

import pytest

from kdtune.records import TrialRecord
from kdtune.report import hypervolume_of, write_report
from tests.test_report import METRIC_COLUMNS, OBJECTIVES, SEARCH_PARAMS, TEACHER, make_records


def timed_records() -> list[TrialRecord]:
    """make_records' ten complete and two failed trials, finishing in reverse order (the last-numbered first),
    9 epochs each, plus two trials stopped at their epoch-1 and epoch-3 rungs."""
    records = [dataclasses.replace(r, epochs=9 if r.status == "COMPLETE" else None, sweep_s=100.0 - 5 * i)
               for i, r in enumerate(make_records())]
    return [*records, TrialRecord("t12", "PRUNED", {}, epochs=1, sweep_s=2.0),
            TrialRecord("t13", "PRUNED", {}, epochs=3, sweep_s=3.0)]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    records = timed_records()
    paths = write_report(tmp_path_factory.mktemp("cost"), study_name="cost", records=records, objectives=OBJECTIVES,
                         search_params=SEARCH_PARAMS, teacher_metrics=TEACHER, meta={},
                         metric_columns=METRIC_COLUMNS)
    return records, paths


def test_the_cost_figure_is_written_and_shown_in_both_reports(written):
    _, paths = written
    assert paths["hypervolume_by_cost"].stat().st_size > 1000
    assert "hypervolume_by_cost.png" in paths["report_md"].read_text()
    assert "Hypervolume against trial-epochs and wall-clock seconds" in paths["report_html"].read_text()  # embedded


def test_the_totals_and_the_95_percent_point_match_a_trial_by_trial_recount(written):
    records, paths = written
    text = paths["report_md"].read_text()
    finished = sorted(records, key=lambda r: r.sweep_s)
    total = sum(r.epochs or 0 for r in records)  # 10 complete x 9 + 1 + 3; the failed count nothing
    assert total == 94
    assert f"In all {total} trial-epochs over 14 trials (2 stopped early, after 4 epochs between them)" in text
    assert f"and {max(r.sweep_s for r in records):.0f} s of sweeping" in text
    final = hypervolume_of(records, OBJECTIVES, TEACHER)
    spent = 0
    for k, record in enumerate(finished):
        spent += record.epochs or 0
        if hypervolume_of(finished[: k + 1], OBJECTIVES, TEACHER) >= 0.95 * final:
            break
    found = re.search(r"reached 95% of its final ([0-9.]+) after ([0-9]+) trial-epochs \(([0-9]+)% of them\) "
                      r"and ([0-9]+) s", text)
    assert found is not None
    assert float(found[1]) == pytest.approx(final, abs=1e-4)
    assert int(found[2]) == spent and int(found[3]) == round(100 * spent / total)
    assert int(found[4]) == round(record.sweep_s)


def test_trials_csv_carries_each_trial_s_seconds_of_sweeping(written):
    import pandas as pd

    records, paths = written
    frame = pd.read_csv(paths["trials_csv"])
    assert dict(zip(frame["trial_id"], frame["sweep_s"])) == {r.trial_id: r.sweep_s for r in records}


def test_no_cost_part_without_recorded_epochs(tmp_path):
    paths = write_report(tmp_path, study_name="old", records=make_records(), objectives=OBJECTIVES,
                         search_params=SEARCH_PARAMS, teacher_metrics=TEACHER, meta={}, metric_columns=METRIC_COLUMNS)
    assert "hypervolume_by_cost" not in paths and "trial-epochs" not in paths["report_md"].read_text()


def test_a_study_stored_before_sweep_spans_gets_the_epochs_panel_alone(tmp_path):
    records = [dataclasses.replace(r, epochs=9 if r.status == "COMPLETE" else None) for r in make_records()]
    paths = write_report(tmp_path, study_name="older", records=records, objectives=OBJECTIVES,
                         search_params=SEARCH_PARAMS, teacher_metrics=TEACHER, meta={}, metric_columns=METRIC_COLUMNS)
    text = paths["report_md"].read_text()
    assert paths["hypervolume_by_cost"].stat().st_size > 1000
    assert "In all 90 trial-epochs over 12 trials." in text and "s of sweeping" not in text
