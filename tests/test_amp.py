"""Mixed precision: bfloat16 autocast for the student's training forward pass where it is safe, float32
everywhere else, and metrics that stay what float32 training gives."""

from __future__ import annotations

import pytest
import torch

from kdtune.config import TrainSpec
from kdtune.data import load_dataset
from kdtune.evaluate import accuracy
from kdtune.methods import MethodContext, build_method
from kdtune.models import build_model
from kdtune.penalties import PENALTIES
from kdtune.train import Penalty, amp_dtype, fit_student
from kdtune.evaluate import logits_of


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data = load_dataset("mnist_5k", {"n_train": 1500, "n_val": 300, "n_test": 100})
    torch.manual_seed(0)
    teacher = build_model("mlp", {"hidden": [128]}, data.info)
    from kdtune.train import fit_teacher

    fit_teacher(teacher, data, TrainSpec(model={"name": "mlp"}, epochs=3, lr=1e-3), seed=0)
    teacher.eval().requires_grad_(False)
    return data, teacher, logits_of(teacher, data.train.x), tmp_path_factory.mktemp("cache")


def _train(setup, method="hinton", params=None, *, amp=None, penalties=()):
    data, teacher, logits, cache = setup
    ctx = MethodContext(data=data, teacher=teacher, teacher_logits=logits, student_spec=None, seed=0, cache=cache)
    torch.manual_seed(0)
    student = build_model("mlp", {"hidden": [32]}, data.info)
    dtypes = set()
    first_linear = next(m for m in student.modules() if isinstance(m, torch.nn.Linear))
    hook = first_linear.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype) if m.training else None)
    distiller = build_method(method, params or {"temperature": 4.0, "alpha": 0.9}, ctx)
    fit_student(student, data, TrainSpec(model={"name": "mlp"}, epochs=3, lr=5e-3), distiller=distiller, penalties=penalties, seed=0, amp=amp)
    hook.remove()
    return accuracy(student, data.val.x, data.val.y), dtypes


def test_bf16_training_runs_the_forward_pass_in_bf16_and_reaches_float32_accuracy(setup):
    acc32, dtypes32 = _train(setup)
    acc16, dtypes16 = _train(setup, amp=torch.bfloat16)
    assert dtypes32 == {torch.float32} and dtypes16 == {torch.bfloat16}
    assert acc32 > 0.8
    assert abs(acc16 - acc32) <= 0.03  # the same model quality within run-to-run noise


def test_steps_that_differentiate_with_respect_to_the_input_stay_in_float32(setup):
    jacobian = Penalty("jacobian", 1e-3, PENALTIES.bind("jacobian", {}))
    _, dtypes = _train(setup, amp=torch.bfloat16, penalties=[jacobian])
    assert dtypes == {torch.float32}


def test_feature_methods_stay_in_float32(setup):
    params = {"weight": 1.0}  # auto layers
    _, dtypes = _train(setup, "cosine", params, amp=torch.bfloat16)
    assert dtypes == {torch.float32}


def test_auto_uses_bf16_only_on_a_gpu():
    assert amp_dtype("auto", torch.device("cpu")) is None
    assert amp_dtype("off", torch.device("cpu")) is None
    assert amp_dtype("bf16", torch.device("cpu")) is torch.bfloat16
