"""kdtune.intervals: t-intervals, paired differences and overlap, against hand computations."""

from __future__ import annotations

import math

import pytest

from kdtune.config import load_study, with_overrides
from kdtune.errors import ConfigError
from kdtune.intervals import Interval, paired_difference, t_interval, within_noise
from kdtune.study._retrain import without_distillation

T_975_2 = 4.302652729911275  # Student's t quantile, 2 degrees of freedom (tables)
T_975_4 = 2.7764451051977987


def test_t_interval_by_hand():
    iv = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1
    assert iv.mean == 2.0 and iv.n == 3
    assert iv.half_width == pytest.approx(T_975_2 / math.sqrt(3))
    five = t_interval([0.1, 0.2, 0.3, 0.4, 0.5])  # sd 0.158114
    assert five.half_width == pytest.approx(T_975_4 * 0.15811388 / math.sqrt(5))
    one = t_interval([0.7])
    assert one.mean == 0.7 and math.isnan(one.half_width) and not one.excludes_zero()
    with pytest.raises(ValueError):
        t_interval([])


def test_paired_difference_cancels_what_both_arms_share():
    # per-seed offsets common to both arms (seed 2 is hard for both): the paired differences are 0.02 each
    a, b = [0.90, 0.80, 0.95], [0.88, 0.78, 0.93]
    diff = paired_difference(a, b)
    assert diff.mean == pytest.approx(0.02) and diff.half_width == pytest.approx(0.0, abs=1e-12)
    assert diff.excludes_zero()
    # unpaired, the same numbers' intervals overlap widely: the pairing is what tells them apart
    assert within_noise(t_interval(a), t_interval(b))
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([1.0], [1.0, 2.0])


def test_interval_signs_and_overlap():
    assert Interval(0.03, 0.02, 3).excludes_zero() and Interval(-0.03, 0.02, 3).excludes_zero()
    assert not Interval(0.01, 0.02, 3).excludes_zero()
    assert within_noise(Interval(0.90, 0.01, 3), Interval(0.915, 0.01, 3))  # [0.89, 0.91] and [0.905, 0.925]
    assert not within_noise(Interval(0.90, 0.01, 3), Interval(0.925, 0.01, 3))  # [0.915, 0.935]
    assert within_noise(Interval(0.90, 0.01, 3), Interval(0.99, math.nan, 1))  # one seed: never told apart


def test_ablation_settings_validate_at_load():
    cfg = load_study("studies/smoke.yaml")
    on = with_overrides(cfg, {"evaluation.ablation": True, "evaluation.seeds": 3})
    assert on.evaluation.ablation.enabled and on.evaluation.ablation.members == "pick"
    front = with_overrides(cfg, {"evaluation.ablation": {"enabled": True, "members": "front"}, "evaluation.seeds": 2})
    assert front.evaluation.ablation.members == "front"
    with pytest.raises(ConfigError, match="interval needs two or more; set seeds: 3"):
        with_overrides(cfg, {"evaluation.ablation": True, "evaluation.seeds": 1})
    with pytest.raises(ConfigError, match="members"):
        with_overrides(cfg, {"evaluation.ablation": {"enabled": True, "members": "everyone"}, "evaluation.seeds": 2})


def test_without_distillation_switches_the_method_and_keeps_everything_else():
    params = {"method.name": "hinton", "method.temperature": 4.0, "method.alpha": 0.9,
              "student.model.hidden.0": 64, "adversary.attack.eps": 0.1, "penalties.jacobian.weight": 1e-3}
    plain = without_distillation(params)
    assert plain == {"method.name": "ce", "student.model.hidden.0": 64, "adversary.attack.eps": 0.1,
                     "penalties.jacobian.weight": 1e-3}
    cfg = with_overrides(load_study("studies/pareto_mnist.yaml"), plain)  # a valid study: ce takes no temperature
    assert cfg.method.name == "ce" and cfg.adversary.attack.params["eps"] == 0.1
