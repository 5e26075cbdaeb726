"""Streamed splits (``kdtune.data.StreamedSplit``): data too large for memory are decoded from their files
batch by batch. Each check compares a streamed dataset with the same files loaded into memory, which
``image_folder`` / ``torchvision:<Class>`` produce independently: the same pixels, labels, statistics,
batch order, training result and metrics."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from kdtune.data import Split, StreamedSplit, load_dataset
from kdtune.errors import DataError
from kdtune.evaluate import evaluate_model, logits_of
from kdtune.models import build_model
from kdtune.spec import EvaluationSpec, TrainSpec
from kdtune.train import fit_teacher
from tests.own_data import write_folder


@pytest.fixture
def folder(tmp_path):
    write_folder(tmp_path / "imgs", splits=("train", "test"), classes=("a", "b", "c", "d"), n_per_class=9,
                 size=(8, 8), mode="RGB")
    return str(tmp_path / "imgs")


def _pair(root: str, **params):
    """The same folder in memory and streamed (``workers`` in-process unless given)."""
    memory = load_dataset("image_folder", {"root": root, "stream": False, **params})
    streamed = load_dataset("image_folder", {"root": root, "stream": True, "workers": 0, **params})
    return memory, streamed


def test_a_streamed_folder_holds_the_same_splits_and_statistics_as_in_memory(folder):
    memory, streamed = _pair(folder)
    assert not memory.streamed and streamed.streamed
    for name in ("train", "val", "test"):
        mem, st = getattr(memory, name), getattr(streamed, name)
        assert isinstance(mem, Split) and isinstance(st, StreamedSplit)
        decoded = st.head(len(st))
        assert torch.equal(decoded.x, mem.x) and torch.equal(decoded.y, mem.y) and torch.equal(st.y, mem.y)
    assert (streamed.input_shape, streamed.n_classes) == (memory.input_shape, memory.n_classes) == ((3, 8, 8), 4)
    np.testing.assert_allclose(streamed.mean, memory.mean, rtol=1e-6)
    np.testing.assert_allclose(streamed.std, memory.std, rtol=1e-6)


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_come_in_the_order_in_memory_batches_do(folder, workers):
    memory, streamed = _pair(folder, workers=workers)
    for gen in (None, 3):
        draw = (lambda: None) if gen is None else (lambda: torch.Generator().manual_seed(gen))  # noqa: E731
        mem = list(memory.train.batches(7, generator=draw()))
        st = list(streamed.train.batches(7, generator=draw()))
        assert len(st) == len(mem) == 5  # 32 training images (36 less 4 carved for val) in batches of 7
        for (xm, ym, im), (xs, ys, is_) in zip(mem, st):
            assert torch.equal(xs, xm) and torch.equal(ys, ym) and torch.equal(is_, im)


def test_training_and_evaluating_on_streamed_data_match_in_memory(folder):
    memory, streamed = _pair(folder)
    spec = TrainSpec(model={"name": "mlp", "hidden": [16]}, epochs=2, batch_size=8, lr=1e-2,
                     augment={"crop_padding": 1, "hflip": True})
    models = {}
    for key, data in (("memory", memory), ("streamed", streamed)):
        torch.manual_seed(0)
        models[key] = model = build_model("mlp", {"hidden": [16]}, data.info)
        history = fit_teacher(model, data, spec, seed=0)
        models[key + "/history"] = [{k: v for k, v in h.items() if k != "time/epoch_s"} for h in history]
    assert models["streamed/history"] == models["memory/history"]
    for name, value in models["memory"].state_dict().items():
        torch.testing.assert_close(models["streamed"].state_dict()[name], value, rtol=0, atol=0, msg=name)
    evaluation = EvaluationSpec(eps=[0.05], pgd_steps=2, n_jacobian=8)
    assert evaluate_model(models["streamed"], streamed, evaluation) == evaluate_model(models["memory"], memory,
                                                                                      evaluation)
    torch.testing.assert_close(logits_of(models["memory"], streamed.train), logits_of(models["memory"], memory.train.x))


def test_stream_auto_streams_data_above_the_memory_limit_only(folder):
    assert not load_dataset("image_folder", {"root": folder}).streamed  # 72 tiny images: in memory
    assert load_dataset("image_folder", {"root": folder, "max_memory_gb": 1e-6, "workers": 0}).streamed


def test_a_streamed_dataset_pickles_for_ray_and_names_its_files(folder, tmp_path):
    _, streamed = _pair(folder)
    shipped = pickle.loads(pickle.dumps(streamed.to("cpu")))
    assert torch.equal(shipped.val.head(5).x, streamed.val.head(5).x)
    assert shipped.fingerprint() == streamed.fingerprint() == _pair(folder)[1].fingerprint()
    before = streamed.fingerprint()
    first = sorted((tmp_path / "imgs" / "train" / "a").glob("*.png"))[0]
    first.write_bytes(first.read_bytes() + b"\0")  # a changed file (size, time): another dataset
    assert _pair(folder)[1].fingerprint() != before


def test_a_corrupt_file_met_while_streaming_fails_with_one_line_from_a_worker(folder, tmp_path):
    # channels and resize given: no header is read up front, so the bad file is met in a DataLoader worker
    streamed = load_dataset("image_folder", {"root": folder, "stream": True, "workers": 1, "channels": 3,
                                             "resize": [8, 8]})
    bad = sorted((tmp_path / "imgs" / "test" / "b").glob("*.png"))[0]
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError) as err:
        for _ in streamed.test.batches(4):
            pass
    message = str(err.value)
    assert message == f"dataset 'image_folder': cannot decode {bad} (cannot identify image file {str(bad)!r}); " \
                      "replace or remove it", message


def test_a_torchvision_class_streams_the_items_it_would_load(tmp_path):
    params = {"size": 40, "image_size": [3, 6, 6], "num_classes": 3, "workers": 0}
    memory = load_dataset("torchvision:FakeData", {**params, "stream": False})
    streamed = load_dataset("torchvision:FakeData", {**params, "stream": True})
    assert streamed.streamed and (len(streamed.train), len(streamed.val), len(streamed.test)) == (28, 4, 8)
    for name in ("train", "val", "test"):
        mem, st = getattr(memory, name), getattr(streamed, name)
        assert torch.equal(st.head(len(st)).x, mem.x) and torch.equal(st.y, mem.y)
    np.testing.assert_allclose(streamed.mean, memory.mean, rtol=1e-6)
