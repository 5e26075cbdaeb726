"""The benchmark harness: its hand-written references compute what kdtune computes, its protocol
helpers behave, and ``python -m benchmarks --quick`` runs end to end. No timed assertions."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdtune.attacks import fgsm, pgd
from kdtune.data import MNIST_INFO
from kdtune.losses import hinton_kd
from kdtune.models import build_model
from kdtune.penalties import hessian, jacobian

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is a top-level folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import hand
from benchmarks._protocol import Result, interleaved, median_ratio
from benchmarks._setup import copy_weights
from benchmarks.cli import KEYS

STEP_KEYS = ("kd_step", "cached_teacher_step", "jacobian_rp", "hessian", "fgsm_at", "pgd7_at")


@pytest.fixture
def twins():
    """A kdtune student and its hand-written twin with the same weights, and a batch."""
    torch.manual_seed(0)
    model = build_model("seed000_student", None, MNIST_INFO)
    torch.manual_seed(0)
    twin = hand.MLP([64])
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    return model, twin, x, y


def test_a_seeded_hand_model_draws_kdtune_s_weights_and_computes_its_logits(twins):
    model, twin, x, _ = twins
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(model(x), twin(x))


def test_hand_kd_loss_is_kdtune_s_hinton_loss(twins):
    model, _, x, y = twins
    s, t = model(x), torch.randn(8, 10)
    torch.testing.assert_close(hand.kd_loss(s, t, y, temperature=3.0, alpha=0.7),
                               hinton_kd(s, t, y, temperature=3.0, alpha=0.7))


@pytest.mark.parametrize("name", ["jacobian", "hessian"])
def test_hand_penalties_compute_kdtune_s_penalties(twins, name):
    model, twin, x, y = twins
    t = torch.randn(8, 10)
    torch.manual_seed(1)
    step = hand.jacobian_step(1.0) if name == "jacobian" else hand.hessian_step(1.0)
    by_hand = step(twin, x.clone(), y, t) - hand.kd_loss(twin(x), t, y)
    torch.manual_seed(1)
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    penalty = jacobian(model, xr, y, logits) if name == "jacobian" else hessian(model, xr, y, logits)
    torch.testing.assert_close(by_hand, penalty, rtol=1e-4, atol=1e-6)


def test_hand_attacks_produce_kdtune_s_adversarial_examples(twins):
    model, twin, x, y = twins
    torch.testing.assert_close(hand.fgsm(twin, x, y, 0.1), fgsm(model, x, y, eps=0.1))
    by_hand = hand.pgd(twin, x, y, 0.1, 7, torch.Generator().manual_seed(3))
    torch.testing.assert_close(by_hand, pgd(model, x, y, eps=0.1, steps=7, generator=torch.Generator().manual_seed(3)))


def test_copy_weights_copies_in_parameter_order(twins):
    model, _, x, _ = twins
    other = hand.MLP([64])
    copy_weights(model, other)
    torch.testing.assert_close(other(x), model(x))


def test_rounds_alternate_their_order_and_ratios_are_taken_within_a_round():
    calls = []
    variants = {name: (lambda n=name: calls.append(n) or 1.0) for name in ("a", "b", "c")}
    times = interleaved(variants, repeats=3, warmup=1)
    assert calls == list("abc") + list("abc") + list("cba") + list("abc")
    assert times == {"a": [1.0] * 3, "b": [1.0] * 3, "c": [1.0] * 3}
    assert median_ratio([2.0, 9.0, 3.0], [1.0, 3.0, 3.0]) == 2.0  # per-round ratios 2, 3, 1


def test_a_result_passes_only_within_its_target_and_its_conditions():
    assert Result("x", 1.0, 1.1).ok and not Result("x", 1.2, 1.1).ok
    assert Result("x", 0.06, 0.05, sense=">=").ok and not Result("x", float("nan"), 1.0).ok
    assert not Result("x", 1.0, 1.1, conditions={"cv_ok": False}).ok
    entry = Result("kd_step", 1.04, 1.1, per_batch={"b64": 1.04, "b256": 1.02}).to_json()
    assert entry["b64"] == 1.04 and entry["value"] == 1.04 and entry["target"] == 1.1 and entry["ok"] is True


@pytest.mark.slow
def test_quick_run_writes_every_benchmark_with_finite_values(tmp_path):
    out = tmp_path / "benchmarks.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(KEYS) <= set(data)
    for key in KEYS:
        entry = data[key]
        assert math.isfinite(entry["value"]) and isinstance(entry["ok"], bool) and entry["target"] > 0
        if key != "hv_gain":  # a gain is a difference of hypervolumes and may be negative
            assert entry["value"] > 0
    for key in STEP_KEYS:
        assert all(math.isfinite(data[key][b]) and data[key][b] > 0 for b in ("b64", "b256"))
    assert data["hv_gain"]["default_hv"] > 0 and data["hv_gain"]["random_hv"] > 0
    slope = data["latency_width_slope"]  # ONNX Runtime's ratio, with eager PyTorch's of the same rounds beside it
    assert slope["torch_ratio"] > 0 and slope["sense"] == ">="
    assert slope["flops_ratio"] == pytest.approx((784 * 256 + 256 * 10) / (784 * 16 + 16 * 10))
    assert len(slope["onnxruntime_rounds"]) == len(slope["torch_rounds"]) == 2  # --quick: 2 rounds, no warm-up round
    # the hand-written study reproduces the trials kdtune ran (same work), up to an image or two
    assert data["harness_overhead"]["same_metrics_max_abs_diff"] <= 0.02
    harness = data["harness_overhead"]  # its value is the median of the per-round ratios it lists (JSON rounds)
    rounds = [a / b for a, b in zip(harness["kdtune_s"], harness["hand_s"], strict=True)]
    assert harness["round_ratios"] == pytest.approx(rounds, abs=1e-3)
    assert harness["value"] == pytest.approx(statistics.median(rounds), abs=1e-3)
    assert data["checks"]["teacher_forward_calls_during_kd_training"] == 0
    assert data["checks"]["clean_accuracy_in_inference_mode"] is True
    assert {"machine", "threads", "torch", "date"} <= set(data["meta"]) and data["meta"]["threads"] == 1
    assert "kd_step" in proc.stdout and "within target" in proc.stdout


@pytest.mark.parametrize("quick", [False, True])
def test_search_cost_runs_the_pareto_study_under_both_schedulers_at_one_budget_of_trials(tmp_path, quick):
    import types

    import yaml

    from benchmarks._setup import Settings
    from benchmarks.search_cost import MOASHA_TRIALS_PER_FIFO, study_raw
    from kdtune.config import load_study

    settings = Settings.tiny() if quick else Settings.full()
    bench = types.SimpleNamespace(settings=settings, root=tmp_path)
    flagship = yaml.safe_load((REPO / "studies" / "pareto_mnist.yaml").read_text())
    loaded = {}
    for scheduler in ("fifo", "moasha"):
        path = tmp_path / f"{scheduler}.yaml"
        path.write_text(yaml.safe_dump(study_raw(bench, 1, scheduler, tmp_path)))
        loaded[scheduler] = load_study(path)  # valid: moasha's rungs fall before the last epoch
    fifo, moasha = loaded["fifo"], loaded["moasha"]
    assert moasha.search.budget == MOASHA_TRIALS_PER_FIFO * fifo.search.budget == MOASHA_TRIALS_PER_FIFO * settings.cost_trials
    assert fifo.search.scheduler.name == "fifo" and moasha.search.scheduler.name == "moasha"
    assert fifo.seed == moasha.seed == 1 and fifo.student.epochs == moasha.student.epochs == settings.cost_epochs
    assert fifo.search.space == moasha.search.space and fifo.search.space.keys() == flagship["search"]["space"].keys()
    assert [str(c) for c in fifo.search.constraints] == ([] if quick else flagship["search"]["constraints"])
