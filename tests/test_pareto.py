"""Tests for kdtune.pareto: dominance masks and exact hypervolumes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from kdtune.pareto import hypervolume, normalized_objectives, pareto_mask
from kdtune.records import Objective, TrialRecord


def union_volume(points: np.ndarray, reference: np.ndarray) -> float:
    """Volume of the union of boxes [p, reference] (minimization) by inclusion–exclusion."""
    total = 0.0
    for k in range(1, len(points) + 1):
        for subset in itertools.combinations(points, k):
            corner = np.max(subset, axis=0)  # the intersection of boxes is the box at the max corner
            total += (-1) ** (k + 1) * np.prod(np.clip(reference - corner, 0.0, None))
    return float(total)


# ---- pareto_mask -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "modes", "expected"),
    [
        # 2-D minimization: [2, 5] and [4, 4] are dominated.
        ([[1, 5], [2, 4], [3, 3], [2, 5], [4, 4]], ["min", "min"], [1, 1, 1, 0, 0]),
        # accuracy (max) vs latency (min).
        ([[0.9, 10], [0.8, 5], [0.85, 12], [0.7, 5]], ["max", "min"], [1, 1, 0, 0]),
        # 2-D maximization.
        ([[1, 5], [2, 4], [1, 4], [0, 6]], ["max", "max"], [1, 1, 0, 1]),
        # 3-D: [2, 2, 2] dominated by [1, 2, 2]; [3, 1, 3] and [2, 3, 1] trade off.
        ([[1, 2, 2], [2, 2, 2], [3, 1, 3], [2, 3, 1]], ["min", "min", "min"], [1, 0, 1, 1]),
        # 3-D mixed: acc max, latency min, params min.
        (
            [[0.9, 2.0, 100], [0.9, 2.0, 200], [0.8, 1.0, 200], [0.7, 1.0, 300], [0.95, 3.0, 50]],
            ["max", "min", "min"],
            [1, 0, 1, 0, 1],
        ),
        # duplicates of a front point are all on the front; duplicates of a dominated one are not.
        ([[1, 2], [1, 2], [2, 3], [2, 3]], ["min", "min"], [1, 1, 0, 0]),
        ([[3.0, 4.0]], ["min", "max"], [1]),  # a single point
        ([[1, 1, 1]] * 4, ["max", "min", "max"], [1, 1, 1, 1]),  # all equal
    ],
)
def test_pareto_mask_hand_built(values, modes, expected):
    mask = pareto_mask(np.array(values, dtype=float), modes)
    assert mask.dtype == bool
    assert mask.tolist() == [bool(e) for e in expected]


def test_pareto_mask_non_finite_rows_are_off_the_front_and_dominate_nothing():
    values = np.array([[np.nan, 0.0], [1.0, 1.0], [-np.inf, -np.inf]])
    assert pareto_mask(values, ["min", "min"]).tolist() == [False, True, False]


def test_pareto_mask_empty_and_bad_modes():
    assert pareto_mask(np.empty((0, 2)), ["min", "max"]).shape == (0,)
    with pytest.raises(ValueError, match="modes"):
        pareto_mask(np.zeros((2, 2)), ["min", "maximize"])
    with pytest.raises(ValueError, match="2 modes for 3"):
        pareto_mask(np.zeros((2, 3)), ["min", "min"])


def test_pareto_mask_matches_brute_force_on_random_points():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 4, size=(60, 3)).astype(float)  # many ties and duplicates
    modes = ["max", "min", "min"]
    loss = values * np.array([-1, 1, 1])
    expected = [
        not any((loss[j] <= loss[i]).all() and (loss[j] < loss[i]).any() for j in range(len(loss)))
        for i in range(len(loss))
    ]
    assert pareto_mask(values, modes).tolist() == expected


# ---- hypervolume -------------------------------------------------------------------------------


def test_hypervolume_2d_staircase():
    # Columns of the staircase under reference (4, 4): widths 1, 1, 1 and heights 1, 2, 3.
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(points, ["min", "min"], [4.0, 4.0]) == pytest.approx(6.0)
    assert hypervolume(points[:1], ["min", "min"], [4.0, 4.0]) == pytest.approx(3.0)
    # A dominated point and a duplicate change nothing.
    more = np.vstack([points, [[3.0, 3.0], [2.0, 2.0]]])
    assert hypervolume(more, ["min", "min"], [4.0, 4.0]) == pytest.approx(6.0)


def test_hypervolume_max_and_mixed_modes():
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(-points, ["max", "max"], [-4.0, -4.0]) == pytest.approx(6.0)
    # accuracy (max, ref 0) vs latency (min, ref 1): boxes 0.9 x 0.5 and 0.6 x 0.8 overlap 0.6 x 0.5.
    mixed = np.array([[0.9, 0.5], [0.6, 0.2]])
    assert hypervolume(mixed, ["max", "min"], [0.0, 1.0]) == pytest.approx(0.45 + 0.48 - 0.30)


def test_hypervolume_3d_box_unions_by_inclusion_exclusion():
    ref = np.array([4.0, 4.0, 4.0])
    a, b, c = [1.0, 2.0, 3.0], [2.0, 1.0, 2.0], [3.0, 3.0, 1.0]
    # |A| = 6, |B| = 12, |A∩B| = 4  ->  14
    assert hypervolume(np.array([a, b]), ["min"] * 3, ref) == pytest.approx(14.0)
    # + |C| = 3, |A∩C| = 1, |B∩C| = 2, |A∩B∩C| = 1  ->  15
    assert hypervolume(np.array([a, b, c]), ["min"] * 3, ref) == pytest.approx(15.0)
    rng = np.random.default_rng(1)
    for _ in range(20):
        points = rng.uniform(0, 4, size=(int(rng.integers(1, 5)), 3))
        assert hypervolume(points, ["min"] * 3, ref) == pytest.approx(union_volume(points, ref))


def test_hypervolume_3d_against_monte_carlo():
    rng = np.random.default_rng(2)
    points = rng.uniform(0.0, 1.0, size=(25, 3))
    samples = rng.uniform(0.0, 1.0, size=(200_000, 3))
    dominated = (points[None, :, :] <= samples[:, None, :]).all(axis=-1).any(axis=1)  # (S,)
    estimate = dominated.mean()  # the unit cube has volume 1; standard error ~1e-3
    assert hypervolume(points, ["min"] * 3, [1.0, 1.0, 1.0]) == pytest.approx(estimate, abs=0.01)


def test_points_beyond_the_reference_contribute_nothing():
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    beyond = np.vstack([points, [[0.0, 5.0], [5.0, 0.0], [4.0, 0.5]]])  # last one: on the ref
    assert hypervolume(beyond, ["min", "min"], [4.0, 4.0]) == pytest.approx(6.0)
    assert hypervolume(np.array([[5.0, 5.0], [0.0, 4.0]]), ["min", "min"], [4.0, 4.0]) == 0.0
    # "max": an accuracy below the reference adds nothing.
    assert hypervolume(np.array([[-0.1, 0.5]]), ["max", "min"], [0.0, 1.0]) == 0.0
    assert hypervolume(np.empty((0, 2)), ["max", "min"], [0.0, 1.0]) == 0.0
    assert hypervolume(np.array([[np.nan, 0.5]]), ["max", "min"], [0.0, 1.0]) == 0.0


def test_hypervolume_rejects_a_bad_reference():
    with pytest.raises(ValueError, match="reference"):
        hypervolume(np.zeros((1, 2)), ["min", "min"], [1.0])
    with pytest.raises(ValueError, match="reference"):
        hypervolume(np.zeros((1, 2)), ["min", "min"], [1.0, math.inf])


# ---- normalized_objectives ---------------------------------------------------------------------

OBJECTIVES = [Objective("val/acc", "max"), Objective("latency/ms_b1", "min")]


def _record(trial_id, acc, latency, status="COMPLETE"):
    return TrialRecord(trial_id, status, metrics={"val/acc": acc, "latency/ms_b1": latency})


def test_normalized_objectives_divides_min_metrics_by_the_teacher():
    records = [
        _record("a", 0.8, 2.0),
        _record("b", 0.9, 8.0),
        _record("c", math.nan, 1.0),  # not finite: left out
        TrialRecord("d", "FAILED", error="boom"),
    ]
    values, reference = normalized_objectives(records, OBJECTIVES, {"latency/ms_b1": 4.0})
    np.testing.assert_allclose(values, [[0.8, 0.5], [0.9, 2.0]])
    np.testing.assert_allclose(reference, [0.0, 1.0])
    # "b" is slower than the teacher: it adds nothing; "a" adds 0.8 x (1 - 0.5).
    assert hypervolume(values, ["max", "min"], reference) == pytest.approx(0.4)


def test_normalized_ideal_box_has_volume_one():
    values, reference = normalized_objectives([_record("a", 1.0, 0.0)], OBJECTIVES, {"latency/ms_b1": 3.0})
    assert hypervolume(values, ["max", "min"], reference) == pytest.approx(1.0)


def test_normalized_falls_back_to_the_max_over_trials(caplog):
    records = [_record("a", 0.8, 2.0), _record("b", 0.9, 8.0)]
    values, _ = normalized_objectives(records, OBJECTIVES, {})
    np.testing.assert_allclose(values[:, 1], [0.25, 1.0])
    assert "latency/ms_b1" in caplog.text


def test_normalized_with_no_usable_trials():
    values, reference = normalized_objectives([TrialRecord("x", "FAILED")], OBJECTIVES, {})
    assert values.shape == (0, 2)
    assert hypervolume(values, ["max", "min"], reference) == 0.0


def test_noise_aware_dominance_ties_latencies_closer_than_their_spread():
    # The case: a chance-level student 13 ns faster than a useful one, both with a 1 us spread.
    values = np.array([[0.136, 0.027469], [0.90, 0.027482]])
    modes = ["max", "min"]
    assert pareto_mask(values, modes).tolist() == [True, True]  # exact comparison: 13 ns buys a front place
    spread = np.array([[0.0, 0.001], [0.0, 0.001]])
    assert pareto_mask(values, modes, spread).tolist() == [False, True]  # a tie on latency: accuracy decides


def test_noise_aware_dominance_uses_the_larger_spread_and_keeps_real_differences():
    modes = ["max", "min"]
    values = np.array([[0.80, 1.00], [0.90, 1.30]])  # 0.30 ms apart
    # a spread smaller than the gap: each is better in one objective, both stay on the front
    assert pareto_mask(values, modes, np.array([[0, 0.1], [0, 0.2]])).tolist() == [True, True]
    # the slower one's spread covers the gap: tied on latency, so the more accurate one dominates
    assert pareto_mask(values, modes, np.array([[0, 0.0], [0, 0.3]])).tolist() == [False, True]
    # a tie in every objective dominates nothing
    assert pareto_mask(values, modes, np.array([[0.2, 0.3], [0, 0]])).tolist() == [True, True]


def test_noise_aware_dominance_with_zero_spread_is_plain_dominance():
    rng = np.random.default_rng(3)
    values = rng.random((40, 3))
    modes = ["max", "min", "min"]
    assert (pareto_mask(values, modes, np.zeros_like(values)) == pareto_mask(values, modes)).all()
    with pytest.raises(ValueError, match="tolerance"):
        pareto_mask(values, modes, -np.ones_like(values))


def test_the_front_ties_latencies_within_their_recorded_spread():
    from kdtune.pareto import front_mask

    objectives = [Objective("val/acc", "max"), Objective("latency/ms_b1", "min")]
    chance = TrialRecord("chance", "COMPLETE", {}, {"val/acc": 0.136, "latency/ms_b1": 0.027469,
                                                    "latency/spread_ms_b1": 0.0004})
    useful = TrialRecord("useful", "COMPLETE", {}, {"val/acc": 0.90, "latency/ms_b1": 0.027482,
                                                    "latency/spread_ms_b1": 0.0003})
    assert front_mask([chance, useful], objectives).tolist() == [False, True]
    # without recorded spreads (a study from before they were measured) the comparison is exact
    bare = [TrialRecord(r.trial_id, "COMPLETE", {}, {k: v for k, v in r.metrics.items() if "spread" not in k})
            for r in (chance, useful)]
    assert front_mask(bare, objectives).tolist() == [True, True]
