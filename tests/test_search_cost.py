"""kdtune.search_cost: seconds of sweeping and the hypervolume against what a search spent, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from kdtune.records import TrialRecord
from kdtune.search_cost import cost_curve, sweep_seconds


def test_sweep_seconds_leave_out_the_gaps_between_sweeps_and_end_a_killed_span_at_its_last_finish():
    spans = [(100.0, 150.0), (300.0, None), (500.0, 520.0)]  # the second driver was killed after 340
    finished = [120.0, 150.0, 310.0, 340.0, 510.0, None, 50.0]
    # 120: 20 into the first span; 150: all 50 of it; 310: 50 + 10; 340: 50 + 40; 510: 50 + 40 + 10
    assert sweep_seconds(finished, spans) == [20.0, 50.0, 60.0, 90.0, 100.0, None, None]


def test_sweep_seconds_of_a_killed_span_where_nothing_finished_count_nothing():
    assert sweep_seconds([210.0], [(0.0, None), (200.0, 260.0)]) == [10.0]
    assert sweep_seconds([1.0], []) == [None]


def _record(i: int, status: str, epochs: int | None, sweep_s: float | None) -> TrialRecord:
    return TrialRecord(f"t{i}", status, {}, {"v": float(i)} if status == "COMPLETE" else {}, epochs=epochs,
                       sweep_s=sweep_s)


def test_cost_curve_orders_trials_by_finish_and_sums_what_each_trained():
    records = [_record(0, "COMPLETE", 9, 30.0), _record(1, "PRUNED", 1, 5.0), _record(2, "FAILED", None, 8.0),
               _record(3, "COMPLETE", 9, 20.0)]
    complete = {0, 3}
    curve = cost_curve(records, lambda positions: float(len(complete & set(positions))))  # "volume": a count
    assert curve.order.tolist() == [1, 2, 3, 0]
    assert curve.epochs.tolist() == [1.0, 1.0, 10.0, 19.0]
    assert curve.seconds.tolist() == [5.0, 8.0, 20.0, 30.0]
    assert curve.hypervolume.tolist() == [0.0, 0.0, 1.0, 2.0]
    assert curve.at_epochs(0.5) == 0.0 and curve.at_epochs(10.0) == 1.0 and curve.at_epochs(18.9) == 1.0
    assert curve.at_epochs(100.0) == 2.0
    assert curve.epochs_to_reach(1.0) == 10.0 and curve.epochs_to_reach(2.0) == 19.0
    assert curve.epochs_to_reach(3.0) is None


def test_cost_curve_without_timestamps_keeps_record_order_and_has_no_seconds():
    records = [_record(0, "COMPLETE", 2, None), _record(1, "COMPLETE", 3, 4.0)]
    curve = cost_curve(records, lambda positions: float(max(positions)) + 1)
    assert curve.order.tolist() == [0, 1] and curve.seconds is None
    np.testing.assert_array_equal(curve.epochs, [2.0, 5.0])
    assert curve.hypervolume.tolist() == pytest.approx([1.0, 2.0])
