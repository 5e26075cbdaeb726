from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdtune.attacks import fgsm
from kdtune.config import TrainSpec
from kdtune.errors import TrainingError
from kdtune.evaluate import accuracy
from kdtune.losses import hinton_kd
from kdtune.methods import Distiller, MethodContext
from kdtune.models import build_model
from kdtune.train import Penalty, fit_student, fit_teacher


class LossOf(Distiller):
    """A test method: task = fn(student logits, teacher logits at idx, y)."""

    def __init__(self, data, teacher_logits, fn):
        super().__init__(MethodContext(data, None, teacher_logits, spec(), 0, Path("unused-cache")))  # never written
        self.fn = fn

    def terms(self, logits, x, y, idx):
        t = None if self.ctx.teacher_logits is None else self.ctx.teacher_logits[idx]
        return {"task": self.fn(logits, t, y)}


def ce(s, t, y):
    return F.cross_entropy(s, y)


def spec(**kw):
    base = {"model": {"name": "mlp", "hidden": [32]}, "epochs": 3, "batch_size": 64, "lr": 3.0e-3}
    return TrainSpec.model_validate({**base, **kw})


def test_teacher_training_beats_chance_and_lowers_its_loss(small_data):
    model = build_model("mlp", {"hidden": [64]}, small_data.info)
    history = fit_teacher(model, small_data, spec(epochs=4), seed=0)
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    assert accuracy(model, small_data.test.x, small_data.test.y) > 0.6  # chance is 0.1


def test_cached_teacher_logits_equal_live_teacher_logits(small_data, small_teacher, small_teacher_logits):
    with torch.no_grad():
        live = small_teacher(small_data.train.x)
    torch.testing.assert_close(small_teacher_logits, live)  # the cache: logits_of


def test_student_distillation_lowers_the_kd_loss(small_data, small_teacher_logits):
    logits = small_teacher_logits
    student = build_model("mlp", {"hidden": [16]}, small_data.info)
    loss = lambda s, t, y: hinton_kd(s, t, y, temperature=4.0, alpha=0.9)  # noqa: E731
    history = fit_student(student, small_data, spec(), distiller=LossOf(small_data, logits, loss), seed=0)
    assert history[-1]["train/task"] < history[0]["train/task"]
    assert history[-1]["val/acc"] > 0.5


def test_each_epoch_is_reported(small_data, small_teacher_logits):
    seen = []
    student = build_model("mlp", {"hidden": [8]}, small_data.info)
    fit_student(student, small_data, spec(epochs=2), distiller=LossOf(small_data, small_teacher_logits, ce), seed=0, on_epoch=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [1, 2]
    assert {"train/loss", "train/task", "val/acc", "time/epoch_s"} <= set(seen[0][1])


def test_zero_weight_penalties_are_never_computed(small_data, small_teacher_logits):
    def boom(*args, **kwargs):
        raise AssertionError("a zero-weight penalty was computed")

    student = build_model("mlp", {"hidden": [8]}, small_data.info)
    fit_student(student, small_data, spec(epochs=1), distiller=LossOf(small_data, small_teacher_logits, ce), penalties=[Penalty("boom", 0.0, boom)], seed=0)


def test_active_penalty_gets_input_gradients_and_is_logged(small_data, small_teacher_logits):
    calls = []

    def probe(model, x, y, logits):
        calls.append(x.requires_grad)
        return logits.pow(2).mean()

    student = build_model("mlp", {"hidden": [8]}, small_data.info)
    history = fit_student(student, small_data, spec(epochs=1), distiller=LossOf(small_data, small_teacher_logits, ce), penalties=[Penalty("probe", 0.1, probe)], seed=0)
    assert calls and all(calls)
    assert history[0]["train/loss"] == pytest.approx(history[0]["train/task"] + 0.1 * history[0]["train/probe"])


def test_penalty_steps_differentiate_the_parameters_only(small_data):
    """The backward of a penalty step fills the parameters' gradients exactly as a full backward does,
    and never the input's (it requires grad only so the penalty can differentiate the logits)."""
    inputs = []

    def input_jacobian(model, x, y, logits):
        inputs.append(x)
        (g,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
        return g.pow(2).sum() / len(x)

    n = len(small_data.train)
    torch.manual_seed(0)
    student = build_model("mlp", {"hidden": [8]}, small_data.info)
    reference = build_model("mlp", {"hidden": [8]}, small_data.info)
    reference.load_state_dict(student.state_dict())
    fit_student(student, small_data, spec(epochs=1, batch_size=n, optimizer="sgd", lr=0.5),
                distiller=LossOf(small_data, None, ce), penalties=[Penalty("jac", 0.1, input_jacobian)], seed=0)

    x = small_data.train.x.clone().requires_grad_(True)  # one full batch: the order does not matter
    logits = reference(x)
    (F.cross_entropy(logits, small_data.train.y) + 0.1 * input_jacobian(reference, x, None, logits)).backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.5 * p.grad
    for got, want in zip(student.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want)
    assert inputs[0].grad is None and x.grad is not None  # the full backward pays for the input's too


def test_adversarial_training_trains_on_attacked_inputs(small_data, small_teacher_logits):
    seen = []

    def adversary(model, x, y):
        x_adv = fgsm(model, x, y, eps=0.1)
        seen.append((x_adv - x).abs().max().item())
        return x_adv

    student = build_model("mlp", {"hidden": [8]}, small_data.info)
    fit_student(student, small_data, spec(epochs=1), distiller=LossOf(small_data, small_teacher_logits, ce), adversary=adversary, seed=0)
    assert seen and max(seen) == pytest.approx(0.1, abs=1e-6)


def test_diverging_training_raises_a_one_line_error(small_data):
    student = build_model("mlp", {"hidden": [8]}, small_data.info)
    with pytest.raises(TrainingError) as err:
        fit_student(student, small_data, spec(optimizer="sgd", lr=1.0e30),
                    distiller=LossOf(small_data, None, ce), seed=0)
    message = str(err.value)
    assert "non-finite" in message and "learning rate" in message and "\n" not in message


def test_training_is_reproducible_for_a_seed(small_data):
    def train(seed):
        torch.manual_seed(seed)
        student = build_model("mlp", {"hidden": [8]}, small_data.info)
        fit_student(student, small_data, spec(epochs=1), distiller=LossOf(small_data, None, ce), seed=seed)
        return torch.cat([p.flatten() for p in student.parameters()])

    torch.testing.assert_close(train(3), train(3))
    assert not torch.equal(train(3), train(4))
