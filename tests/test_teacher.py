import logging

import pytest
import torch

from kdtune.config import TrainSpec
from kdtune.errors import KdtuneError
from kdtune.teacher import load_or_train_teacher, teacher_key

SPEC = TrainSpec.model_validate({"model": {"name": "mlp", "hidden": [16]}, "epochs": 1})


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_teacher_is_trained_once_then_loaded(small_data, tmp_path):
    first = load_or_train_teacher(SPEC, small_data, seed=0, root=tmp_path)
    second = load_or_train_teacher(SPEC, small_data, seed=0, root=tmp_path)
    assert (first.from_cache, second.from_cache) == (False, True)
    torch.testing.assert_close(weights(first.model), weights(second.model))
    assert second.history == first.history


def test_key_depends_on_spec_data_and_seed(small_data):
    other = TrainSpec.model_validate({"model": {"name": "mlp", "hidden": [16]}, "epochs": 2})
    keys = {teacher_key(SPEC, small_data, 0), teacher_key(SPEC, small_data, 1), teacher_key(other, small_data, 0)}
    assert len(keys) == 3
    assert teacher_key(SPEC, small_data, 0) == teacher_key(SPEC, small_data, 0)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupt_cache_is_retrained_not_loaded(small_data, tmp_path, caplog, damage):
    first = load_or_train_teacher(SPEC, small_data, seed=0, root=tmp_path)
    blob = first.path.read_bytes()
    first.path.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else blob[:-9] + bytes([blob[-9] ^ 1]) + blob[-8:])
    with caplog.at_level(logging.WARNING):
        again = load_or_train_teacher(SPEC, small_data, seed=0, root=tmp_path)
    assert not again.from_cache
    assert "corrupt" in caplog.text
    torch.testing.assert_close(weights(again.model), weights(first.model))  # same seed, same teacher
    assert load_or_train_teacher(SPEC, small_data, seed=0, root=tmp_path).from_cache


def test_unwritable_cache_gives_a_clear_error(small_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(KdtuneError, match="cache"):
        load_or_train_teacher(SPEC, small_data, seed=0, root=blocker)


def test_a_diverging_teacher_fails_with_a_fix_naming_the_teacher_section(small_data, tmp_path):
    spec = TrainSpec.model_validate({"model": {"name": "mlp", "hidden": [16]}, "optimizer": "sgd", "lr": 1.0e30})
    with pytest.raises(KdtuneError) as err:
        load_or_train_teacher(spec, small_data, seed=0, root=tmp_path)
    message = str(err.value)
    assert message.startswith("teacher training failed: loss became non-finite") and "teacher.lr" in message
    assert not list(tmp_path.rglob("*.pt"))  # nothing cached


def test_an_adversarially_trained_teacher_is_more_robust_and_cached_separately(small_data, tmp_path):
    from kdtune.config import EvaluationSpec, TeacherSpec
    from kdtune.evaluate import evaluate_model

    base = {"model": {"name": "mlp", "hidden": [64]}, "epochs": 4, "lr": 3.0e-3}
    plain = TeacherSpec.model_validate(base)
    robust = TeacherSpec.model_validate({**base, "adversary": {"attack": {"name": "fgsm", "eps": 0.1}}})
    assert teacher_key(plain, small_data, 0) != teacher_key(robust, small_data, 0)
    spec = EvaluationSpec(eps=[0.1], pgd_steps=10, fgsm=False, n_jacobian=8)
    scores = {}
    for name, teacher_spec in (("plain", plain), ("robust", robust)):
        teacher = load_or_train_teacher(teacher_spec, small_data, seed=0, root=tmp_path)
        scores[name] = evaluate_model(teacher.model, small_data, spec)["test/robust_acc@0.1"]
    assert scores["robust"] > scores["plain"] + 0.1
