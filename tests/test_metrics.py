"""kdtune.metrics: the one vocabulary of metric names."""

from __future__ import annotations

import math

import pytest

from kdtune import metrics
from kdtune.metrics import Metric
from kdtune.spec import EvaluationSpec


@pytest.mark.parametrize("name,parts,split", [
    ("val/acc", ("val", "acc", None, None), "val"),
    ("test/robust_acc@0.1", ("test", "robust_acc", 0.1, None), "test"),
    ("val/fgsm_acc@0.05", ("val", "fgsm_acc", 0.05, None), "val"),
    ("test/autoattack_acc@0.3", ("test", "autoattack_acc", 0.3, None), "test"),
    ("test_autoattack_images/robust_acc@0.1", ("test_autoattack_images", "robust_acc", 0.1, None), "test"),
    ("latency/ms_b256", ("latency", "ms_b256", None, None), None),
    ("latency/spread_ms_b256", ("latency", "spread_ms_b256", None, None), None),
    ("model/onnx_max_abs_diff", ("model", "onnx_max_abs_diff", None, None), None),
    ("model/params", ("model", "params", None, None), None),
    ("jacobian/norm", ("jacobian", "norm", None, None), "test"),
    ("val/robust_acc@0.1/ci95", ("val", "robust_acc", 0.1, "ci95"), "val"),
    ("seeds/n", ("seeds", "n", None, None), None),
])
def test_a_name_parses_into_its_parts_and_formats_back(name, parts, split):
    metric = Metric.parse(name)
    assert (metric.group, metric.kind, metric.eps, metric.stat) == parts
    assert str(metric) == name and metric.split == split


@pytest.mark.parametrize("bad", ["acc", "val/", "val/acc@", "Val/acc", "val/acc/median", "val/acc@x"])
def test_a_name_outside_the_vocabulary_is_refused(bad):
    with pytest.raises(ValueError, match="is not a metric name"):
        Metric.parse(bad)
    assert metrics.parse_or_none(bad) is None


def test_builders_and_mlflow_spelling():
    assert metrics.acc("val") == "val/acc"
    assert metrics.attacked_acc("test", 0.05) == "test/robust_acc@0.05"
    assert metrics.attacked_acc("val", 0.1, "fgsm") == "val/fgsm_acc@0.1"
    assert metrics.attacked_acc("test", 0.1, "autoattack") == "test/autoattack_acc@0.1"
    assert metrics.latency(1) == "latency/ms_b1" and metrics.latency_batch("latency/ms_b64") == 64
    assert metrics.latency_batch("val/acc") is None
    assert metrics.latency_spread(256) == "latency/spread_ms_b256"
    assert metrics.latency_batch("latency/spread_ms_b256") is None  # a spread is not a latency
    assert metrics.spread_batch("latency/spread_ms_b256") == 256 and metrics.spread_batch("latency/ms_b256") is None
    assert Metric.parse("latency/spread_ms_b1").mlflow == "latency/spread_ms_b1"  # MLflow takes it as it is
    assert [metrics.is_latency(n) for n in ("latency/ms_b1", "latency/spread_ms_b1", "model/onnx_max_abs_diff",
                                            "model/params", "val/acc")] == [True, True, True, False, False]
    assert Metric.parse("val/robust_acc@0.1").mlflow == "val/robust_acc_at_0.1"
    assert metrics.mlflow_key("teacher/test/autoattack_acc@0.1") == "teacher/test/autoattack_acc_at_0.1"
    assert metrics.eps_of("val/robust_acc@0.2") == 0.2 and math.isinf(metrics.eps_of("val/acc"))
    assert metrics.is_attacked_acc("val/robust_acc@0.1", "val")
    assert not metrics.is_attacked_acc("val/robust_acc@0.1/mean", "val")
    assert not metrics.is_attacked_acc("test/robust_acc@0.1", "val")


def test_a_trial_reports_every_split_attack_and_eps_once():
    spec = EvaluationSpec(eps=[0.05, 0.1], fgsm=True, latency={"batch_sizes": [1, 8]})
    names = metrics.trial_metric_names(spec)
    # acc, attacks, latency and its spread, costs, the ONNX check (the default runtime), Jacobian
    assert len(names) == len(set(names)) == 2 + 2 * 2 * 2 + 2 * 2 + 3 + 1 + 1
    assert names[-5:] == ["model/params", "model/flops", "model/bytes", "model/onnx_max_abs_diff", "jacobian/norm"]
    assert names[10:14] == ["latency/ms_b1", "latency/spread_ms_b1", "latency/ms_b8", "latency/spread_ms_b8"]
    eager = metrics.trial_metric_names(EvaluationSpec(latency={"runtime": "torch"}))
    assert "model/onnx_max_abs_diff" not in eager and "latency/spread_ms_b256" in eager
    assert {Metric.parse(n).split for n in names if n.startswith(("val/", "test/"))} == {"val", "test"}
    assert "val/fgsm_acc@0.05" in names and "latency/ms_b8" in names
    assert metrics.trial_metric_names(EvaluationSpec(fgsm=False, eps=[0.1]))[2:4] == [
        "val/robust_acc@0.1", "test/robust_acc@0.1"]
    assert metrics.autoattack_metric_names(EvaluationSpec()) == []
    assert metrics.autoattack_metric_names(EvaluationSpec(autoattack={"enabled": True, "eps": [0.1, 0.2]})) == [
        "test/autoattack_acc@0.1", "test/autoattack_acc@0.2"]


@pytest.mark.parametrize("name,allowed", [
    ("val/acc", True), ("val/robust_acc@0.1", True), ("latency/ms_b1", True), ("model/params", True),
    ("model/flops", True), ("model/bytes", True),
    ("test/acc", False), ("test/fgsm_acc@0.1", False), ("jacobian/norm", False), ("seeds/n", False),
    ("latency/spread_ms_b1", False), ("model/onnx_max_abs_diff", False),
])
def test_only_validation_metrics_and_costs_may_be_objectives(name, allowed):
    assert (metrics.objective_problem(name) is None) is allowed


def test_a_measurements_noise_is_refused_as_an_objective_pointing_at_the_measurement():
    assert "search on 'latency/ms_b64' instead" in metrics.objective_problem("latency/spread_ms_b64")
    assert "a check of the ONNX export" in metrics.objective_problem("model/onnx_max_abs_diff")


def test_seed_summary_is_the_mean_and_the_t_interval():
    runs = [{"val/acc": 0.8, "x": 1.0}, {"val/acc": 0.9}, {"val/acc": 0.7}]
    out = metrics.seed_summary(runs)
    assert set(out) == {"val/acc/mean", "val/acc/ci95"}
    assert out["val/acc/mean"] == pytest.approx(0.8)
    assert out["val/acc/ci95"] == pytest.approx(4.302652729911275 * 0.1 / math.sqrt(3))  # t(0.975, 2) sd/sqrt(n)
