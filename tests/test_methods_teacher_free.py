import pytest
import torch
import torch.nn.functional as F

from kdtune.config import TrainSpec
from kdtune.data import load_dataset
from kdtune.config import validate_study
from kdtune.errors import ConfigError
from kdtune.spec import ModelSpec
from kdtune.losses import hinton_kd
from kdtune.methods import METHODS, MethodContext, build_method
from kdtune.methods._teacher_free import virtual_teacher
from kdtune.models import build_model
from kdtune.teacher import teacher_key
from kdtune.train import fit_student

WEAK = {"name": "mlp", "hidden": [16]}
HELPERS = {"tfkd_self": {}, "reversed": {"teacher_model": WEAK, "teacher_epochs": 2}}


def spec(**kw):
    base = {"model": {"name": "mlp", "hidden": [32]}, "epochs": 3, "batch_size": 64, "lr": 3.0e-3}
    return TrainSpec.model_validate({**base, **kw})


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist_5k", {"n_train": 600, "n_val": 200, "n_test": 200})


def context(data, cache):
    """No study teacher at all: these methods bring their own (or none)."""
    return MethodContext(data, None, None, spec(), 0, cache)


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# ---------------------------------------------------------------- tfkd_reg


def test_virtual_teacher_puts_mass_a_on_the_label_and_sums_to_one():
    y = torch.tensor([3, 0, 9])
    p = virtual_teacher(y, 10, a=0.95)  # (3, 10)
    torch.testing.assert_close(p.sum(1), torch.ones(3))
    torch.testing.assert_close(p[torch.arange(3), y], torch.full((3,), 0.95))
    others = p.masked_select(F.one_hot(y, 10) == 0)
    torch.testing.assert_close(others, torch.full((27,), 0.05 / 9))


def test_tfkd_reg_loss_equals_the_formula_by_hand(data, tmp_path):
    d = build_method("tfkd_reg", {"a": 0.95, "temperature": 4.0, "alpha": 0.7}, context(data, tmp_path))
    torch.manual_seed(0)
    logits, y = torch.randn(8, 10), data.train.y[:8]
    task = d.terms(logits, data.train.x[:8], y, torch.arange(8))["task"]

    t = 4.0
    p_virtual = torch.full((8, 10), 0.05 / 9)
    p_virtual[torch.arange(8), y] = 0.95
    soft = torch.softmax(p_virtual / t, dim=1)
    kl = (soft * (soft.log() - torch.log_softmax(logits / t, dim=1))).sum() / 8
    torch.testing.assert_close(task, 0.3 * F.cross_entropy(logits, y) + 0.7 * t**2 * kl)


def test_tfkd_reg_checks_its_correct_class_probability():
    assert METHODS.validate("tfkd_reg", {}) == {"a": 0.99, "temperature": 20.0, "alpha": 0.9}
    with pytest.raises(ConfigError, match="'a'"):
        METHODS.validate("tfkd_reg", {"a": 0.5})


# ---------------------------------------------------------------- helper-model methods


@pytest.mark.parametrize("name", sorted(HELPERS))
def test_helper_model_is_trained_once_then_loaded_from_cache(name, data, tmp_path):
    first = build_method(name, HELPERS[name], context(data, tmp_path))
    second = build_method(name, HELPERS[name], context(data, tmp_path))
    assert (first.helper.from_cache, second.helper.from_cache) == (False, True)
    assert first.helper.path == second.helper.path and first.helper.path.is_relative_to(tmp_path)
    torch.testing.assert_close(weights(first.helper.model), weights(second.helper.model))
    assert not list(first.parameters())  # frozen helper, not a submodule: never in the optimizer
    assert all(not p.requires_grad for p in first.helper.model.parameters())


def test_tfkd_self_pretrains_a_copy_of_the_student_spec(data, tmp_path):
    d = build_method("tfkd_self", {}, context(data, tmp_path))
    assert d.helper.path.stem == teacher_key(spec(), data, 0)  # shared with any identical teacher
    student = build_model("mlp", {"hidden": [32]}, data.info)
    assert [p.shape for p in d.helper.model.parameters()] == [p.shape for p in student.parameters()]


def _study_with(method: dict) -> dict:
    return {"name": "weak", "teacher": {"model": {"name": "mlp"}}, "student": {"model": {"name": "mlp"}},
            "method": method, "search": {"space": {"method.alpha": {"type": "float", "low": 0.1, "high": 0.9}},
                                         "objectives": [{"metric": "val/acc", "mode": "max"}], "budget": 2}}


def test_reversed_teacher_model_is_a_model_spec_validated_at_load():
    with pytest.raises(ConfigError, match=r"^x: method.teacher_model: unknown model 'mpl' \(did you mean 'mlp'\?\)"):
        validate_study(_study_with({"name": "reversed", "teacher_model": {"name": "mpl"}}), source="x")
    with pytest.raises(ConfigError, match=r"unexpected parameter 'hiden' \(did you mean 'hidden'\?\)"):
        validate_study(_study_with({"name": "reversed", "teacher_model": {"name": "mlp", "hiden": [8]}}), source="x")
    with pytest.raises(ConfigError, match=r"parameter 'teacher_model'.*expected a mapping with a 'name' key"):
        validate_study(_study_with({"name": "reversed", "teacher_model": {"hidden": [8]}}), source="x")
    cfg = validate_study(_study_with({"name": "reversed", "teacher_model": {"name": "mlp"}}), source="x")
    assert cfg.method.params["teacher_model"] == ModelSpec(name="mlp", params={"hidden": [64]})  # defaults filled
    assert cfg.to_raw()["method"]["teacher_model"] == {"name": "mlp", "hidden": [64]}  # the YAML layout


def test_reversed_builds_the_weak_teacher_and_distils_from_it_live(data, tmp_path):
    d = build_method("reversed", {**HELPERS["reversed"], "temperature": 3.0, "alpha": 0.5}, context(data, tmp_path))
    assert [p.shape[0] for p in d.helper.model.parameters()][:2] == [16, 16]  # mlp 784-16-10
    idx = torch.tensor([5, 1, 7])
    logits = torch.randn(3, 10)
    x_adv = torch.rand(3, 1, 28, 28)  # what the student saw; targets still come from the clean inputs
    d.begin_batch(data.train.x[idx], idx)  # as the training loop hands it the clean batch
    task = d.terms(logits, x_adv, data.train.y[idx], idx)["task"]
    with torch.no_grad():
        targets = d.helper.model(data.train.x[idx])
    torch.testing.assert_close(task, hinton_kd(logits, targets, data.train.y[idx], temperature=3.0, alpha=0.5))


# ---------------------------------------------------------------- all three


@pytest.mark.parametrize("name", ["tfkd_reg", "tfkd_self", "reversed"])
def test_teacher_free_method_trains_a_student(name, data, tmp_path):
    d = build_method(name, HELPERS.get(name, {}), context(data, tmp_path))
    torch.manual_seed(0)
    student = build_model("mlp", {"hidden": [32]}, data.info)
    history = fit_student(student, data, spec(), distiller=d, seed=0)
    assert history[-1]["train/task"] < history[0]["train/task"]
    assert history[-1]["val/acc"] > 0.5  # chance is 0.1
