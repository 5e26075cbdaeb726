"""MO-ASHA's ranking on hand-built points: fronts, the epsilon-net order inside a front, keep or stop."""

from __future__ import annotations

import numpy as np
import pytest

from kdtune.mo_rank import epsilon_net_order, keep_at_rung, n_kept, nondominated_sort, rank_order

MODES = ["max", "min"]  # accuracy up, latency down
# A, B, C trade accuracy for latency (front 0); B and C both dominate D; D dominates E.
POINTS = np.array([[0.90, 3.0], [0.80, 1.0], [0.85, 2.0], [0.70, 2.5], [0.60, 4.0]])


def test_fronts_peel_off_in_dominance_order():
    assert nondominated_sort(POINTS, MODES) == [[0, 1, 2], [3], [4]]


def test_a_point_equal_to_a_front_point_shares_its_front():
    values = np.array([[0.9, 1.0], [0.9, 1.0], [0.5, 2.0]])
    assert nondominated_sort(values, MODES) == [[0, 1], [2]]


def test_ranks_follow_the_fronts_and_the_epsilon_net_inside_each():
    # Normalized by the rung's min/max (acc 0.6..0.9, latency 1..4), lower is better:
    # A (0, 2/3), B (1/3, 0), C (1/6, 1/3). Seed: A, the best accuracy. From A, B is sqrt(5)/3 = 0.745 away and
    # C sqrt(5)/6 = 0.373: B next, then C. D and E are alone in their fronts.
    assert rank_order(POINTS, MODES) == [0, 1, 2, 3, 4]


def test_the_epsilon_net_spreads_over_the_front_rather_than_following_accuracy():
    # One front of four, accuracy 0.9 > 0.88 > 0.8 > 0.7 and latency 4 > 3.8 > 2 > 1. Normalized:
    # P0 (0, 1), P1 (0.1, 0.933), P2 (0.5, 0.333), P3 (1, 0). Seed P0 (best accuracy); farthest from it is
    # P3 (1.414; P2 0.833, P1 0.120); then P2 (min distance 0.601 to P3) before P1 (0.120 to P0).
    front = np.array([[0.90, 4.0], [0.88, 3.8], [0.80, 2.0], [0.70, 1.0]])
    assert rank_order(front, MODES) == [0, 3, 2, 1]
    # with eta 2 the top two continue: the most accurate and the fastest, not the second most accurate
    assert [keep_at_rung(front, MODES, 2, i) for i in range(4)] == [True, False, False, True]


def test_epsilon_net_order_by_hand_and_ties_go_to_the_lower_index():
    points = np.array([[0.5, 0.5], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    # seed: lowest first coordinate, the first of rows 1 and 3; farthest from (0, 1) is (1, 0) (1.414);
    # then (0.5, 0.5) (0.707) before row 3, which sits on the seed (0)
    assert epsilon_net_order(points) == [1, 2, 0, 3]
    assert epsilon_net_order(np.zeros((0, 2))) == []


def test_a_constant_objective_does_not_break_the_normalization():
    values = np.array([[0.9, 2.0], [0.8, 2.0], [0.7, 2.0]])  # same latency: accuracy decides
    assert rank_order(values, MODES) == [0, 1, 2]


def test_a_dominated_trial_stops_and_a_front_trial_continues():
    at_rung = POINTS[:4]  # A, B, C, D reached the rung; eta 3 keeps ceil(4 / 3) = 2
    assert n_kept(4, 3) == 2
    assert keep_at_rung(at_rung, MODES, 3, 0)  # A: the best accuracy, first of the front
    assert keep_at_rung(at_rung, MODES, 3, 1)  # B: farthest from A on the front
    assert not keep_at_rung(at_rung, MODES, 3, 2)  # C: on the front, but third
    assert not keep_at_rung(at_rung, MODES, 3, 3)  # D: dominated


def test_the_first_trial_at_a_rung_always_continues_and_the_second_only_if_it_ranks_first():
    assert keep_at_rung(POINTS[4:5], MODES, 3, 0)  # alone: ceil(1 / 3) = 1 continues, however poor it is
    assert not keep_at_rung(POINTS[[0, 4]], MODES, 3, 1)  # E after A: ceil(2 / 3) = 1 and E is second
    assert keep_at_rung(POINTS[[4, 0]], MODES, 3, 1)  # A after E: A ranks first


def test_non_finite_values_and_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="finite"):
        rank_order(np.array([[0.9, np.nan]]), MODES)
    with pytest.raises(ValueError, match="shape"):
        rank_order(np.array([0.9, 1.0]), MODES)
    with pytest.raises(IndexError):
        keep_at_rung(POINTS, MODES, 3, 5)
