import copy

import pytest
import torch
from torch import nn

from kdtune.config import EvaluationSpec
from kdtune.data import MNIST_INFO, Dataset, Split
from kdtune.evaluate import (
    accuracy,
    correct,
    evaluate_model,
    mean_jacobian_norm,
    robust_accuracy,
)
from kdtune.metrics import eps_name
from kdtune.metrics import trial_metric_names as metric_names
from kdtune.models import build_model


def test_eps_names_are_stable():
    assert [eps_name(e) for e in (0.05, 0.1, 0.2, 0.0)] == ["0.05", "0.1", "0.2", "0"]


def test_accuracy_counts_correct_predictions():
    class Fixed(nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(x.flatten(1)[:, 0].long(), 10).float()

    x = torch.tensor([0, 1, 2, 3]).float().view(4, 1, 1, 1)
    assert accuracy(Fixed(), x, torch.tensor([0, 1, 9, 9])) == 0.5


def test_an_example_is_robust_only_if_it_was_classified_right_before_the_attack():
    """AutoAttack's count: an attack that moves a misclassified example into its class has not shown it
    robust. The model predicts the first pixel's value; the "attacks" replace the inputs."""
    class Fixed(nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(x.flatten(1)[:, 0].long(), 10).float()

    def fixes_all(model, xb, yb):  # every prediction right afterwards
        return yb.float().view(-1, 1, 1, 1)

    def breaks_first(model, xb, yb):  # the example of class 0 wrong, every other right
        return torch.where(yb == 0, 5, yb).float().view(-1, 1, 1, 1)

    x = torch.tensor([0, 1, 2, 3]).float().view(4, 1, 1, 1)
    y = torch.tensor([0, 1, 9, 9])  # clean: the first two right
    assert accuracy(Fixed(), x, y) == 0.5
    assert robust_accuracy(Fixed(), x, y, fixes_all) == 0.5  # not 1.0: examples 3 and 4 were wrong already
    assert robust_accuracy(Fixed(), x, y, breaks_first) == 0.25  # only example 2 is right before and after
    assert robust_accuracy(Fixed(), x, y, fixes_all, batch_size=3) == 0.5  # the same over several batches
    right = correct(Fixed(), x, y)  # the clean verdicts, computed once for several attacks
    assert right.tolist() == [True, True, False, False]
    assert robust_accuracy(Fixed(), x, y, breaks_first, right=right, batch_size=3) == 0.25


def test_evaluate_reports_exactly_the_named_metrics_and_robust_never_beats_clean(small_data, small_teacher):
    trained = copy.deepcopy(small_teacher).requires_grad_(True)  # as a student is: model/params counts trainable ones
    spec = EvaluationSpec(eps=[0.05, 0.1, 0.2], pgd_steps=10, n_jacobian=64)
    metrics = evaluate_model(trained, small_data, spec)
    latency = {f"latency/{kind}_b{b}" for b in spec.latency.batch_sizes for kind in ("ms", "spread_ms")}
    assert set(metrics) | latency | {"model/onnx_max_abs_diff"} == set(metric_names(spec))  # latency: kdtune.latency
    for split in ("val", "test"):
        clean = metrics[f"{split}/acc"]
        assert clean > 0.6
        previous = clean
        for eps in spec.eps:
            pgd, fgsm = metrics[f"{split}/robust_acc@{eps_name(eps)}"], metrics[f"{split}/fgsm_acc@{eps_name(eps)}"]
            assert pgd <= clean and fgsm <= clean
            assert pgd <= fgsm + 0.02  # PGD is at least as strong as FGSM (small slack for randomness)
            assert pgd <= previous + 0.02  # robust accuracy does not rise with eps
            previous = pgd
    assert metrics["model/params"] == sum(p.numel() for p in trained.parameters())


# Shares of class 0 in each split: a model that always predicts class 0 scores exactly these.
ZERO_SHARE = {"train": 0.5, "val": 0.75, "test": 0.25}


def _split(n: int, n_zero: int, seed: int) -> Split:
    """``n`` noise images (1, 2, 2), the first ``n_zero`` labelled 0, the others 1."""
    x = torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(seed))
    return Split(x, (torch.arange(n) >= n_zero).long())


def _split_data() -> Dataset:
    """Train, val and test of different sizes with different shares of class 0 (``ZERO_SHARE``)."""
    sizes = {"train": 40, "val": 20, "test": 12}
    splits = {k: _split(n, int(ZERO_SHARE[k] * n), seed) for seed, (k, n) in enumerate(sizes.items())}
    return Dataset("splits", **splits, n_classes=2, input_shape=(1, 2, 2), mean=(0.5,), std=(0.25,))


def always_zero() -> nn.Module:
    """A linear model (1, 2, 2) -> 2 logits with zero weights and a bias for class 0: it predicts 0 for every
    input, and attacks can still differentiate it (the gradient is zero, so no attack changes a prediction)."""
    linear = nn.Linear(4, 2)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor([2.0, -2.0]))
    return nn.Sequential(nn.Flatten(), linear)


def test_val_metrics_come_from_the_val_split_and_test_metrics_from_the_test_split():
    """Each split has its own share of class 0, so a constant model's accuracy names the split it was
    measured on: swapping val and test, or measuring "val" on train, changes the numbers."""
    data = _split_data()
    spec = EvaluationSpec(eps=[0.1, 0.3], pgd_steps=2, n_jacobian=4)
    metrics = evaluate_model(always_zero(), data, spec, seed=0)
    assert metrics["val/acc"] == ZERO_SHARE["val"] and metrics["test/acc"] == ZERO_SHARE["test"]
    assert ZERO_SHARE["train"] not in (metrics["val/acc"], metrics["test/acc"])
    for eps in spec.eps:
        for split in ("val", "test"):
            for kind in ("robust_acc", "fgsm_acc"):
                name = f"{split}/{kind}@{eps_name(eps)}"
                # no attack moves a constant prediction: robust = clean, on the split's own images
                assert metrics[name] <= metrics[f"{split}/acc"]
                assert metrics[name] == ZERO_SHARE[split], name
    split_metrics = {k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))}
    assert len(split_metrics) == 2 * (1 + 2 * len(spec.eps))
    assert all(v == ZERO_SHARE[k.split("/")[0]] for k, v in split_metrics.items())


def test_evaluation_leaves_the_model_mode_alone(small_data):
    model = build_model("mlp", {"hidden": [8]}, small_data.info).train()
    evaluate_model(model, small_data, EvaluationSpec(eps=[0.1], pgd_steps=2, n_jacobian=8))
    assert model.training


def test_jacobian_norm_of_a_linear_model_is_its_scaled_weight_norm():
    """For logits = W (x - m)/s + b, d logits / dx = W / s, so ||J||_F = ||W||_F / s for every input."""
    model = build_model("mlp", {"hidden": []}, MNIST_INFO)
    expected = model.net[-1].weight.norm().item() / 0.3081
    assert mean_jacobian_norm(model, torch.rand(10, 1, 28, 28)) == pytest.approx(expected, rel=1e-5)
