"""The user's own data: ``image_folder``, ``arrays`` (.npz) and ``torchvision:<Class>`` references, each
loaded from files the tests write and checked against what was written (splits, labels, shapes, mean/std
by hand), through ``load_dataset`` and through a study file; bad data fails at load with one line, exit
code 2 and nothing written."""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from kdtune import cli
from kdtune.config import load_study, with_overrides
from kdtune.data import DATASETS, Split, load_dataset
from kdtune.errors import ConfigError, DataError
from kdtune.models import build_model
from tests.own_data import labelled, write_folder, write_npz
from tests.studies import base_study, write_study


def _rows(split: Split) -> list[bytes]:
    """Each image's 0..255 pixels as bytes, to find it among the written ones."""
    u8 = (split.x * 255).round().to(torch.uint8)
    return [row.numpy().tobytes() for row in u8]


def _pairs(split: Split) -> set[tuple[bytes, int]]:
    return set(zip(_rows(split), split.y.tolist()))


def _written(x: np.ndarray, y: np.ndarray) -> set[tuple[bytes, int]]:
    return {(row.tobytes(), int(label)) for row, label in zip(x, y)}


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of (N, C, H, W) pixels in [0, 1], in float64."""
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


# ---------------------------------------------------------------- image_folder


def test_image_folder_carves_val_and_test_from_train_stratified(tmp_path):
    x, y = write_folder(tmp_path / "imgs")["train"]  # 3 classes x 6 grayscale 8x8 PNGs
    ds = load_dataset("image_folder", {"root": str(tmp_path / "imgs")})
    assert ds.name == "image_folder" and ds.input_shape == (1, 8, 8) and ds.n_classes == 3
    assert (len(ds.train), len(ds.val), len(ds.test)) == (11, 3, 4)  # val, test: 10%, 20%, at least one per class
    pairs = [_pairs(s) for s in (ds.train, ds.val, ds.test)]
    assert not (pairs[0] & pairs[1]) and not (pairs[0] & pairs[2]) and not (pairs[1] & pairs[2])
    assert pairs[0] | pairs[1] | pairs[2] == _written(x, y)  # every image once, with its folder's class
    for split in (ds.train, ds.val, ds.test):
        assert set(split.y.tolist()) == {0, 1, 2} and split.x.dtype == torch.float32
    index = {row.tobytes(): i for i, row in enumerate(x)}
    train = x[[index[r] for r in _rows(ds.train)]] / 255.0
    mean, std = _stats(train)
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(ds.std, std, rtol=1e-5)
    again = load_dataset("image_folder", {"root": str(tmp_path / "imgs")})
    assert again.fingerprint() == ds.fingerprint()  # seeded
    other = load_dataset("image_folder", {"root": str(tmp_path / "imgs"), "split_seed": 1})
    assert _pairs(other.test) != pairs[2]


def test_image_folder_uses_val_and_test_folders_and_infers_rgb(tmp_path):
    written = write_folder(tmp_path / "imgs", splits=("train", "val", "test"), mode="RGB", n_per_class=4)
    ds = load_dataset("image_folder", {"root": str(tmp_path / "imgs")})
    assert ds.input_shape == (3, 8, 8) and ds.n_classes == 3
    for split, name in ((ds.train, "train"), (ds.val, "val"), (ds.test, "test")):
        assert len(split) == 12 and _pairs(split) == _written(*written[name])  # nothing carved
    mean, std = _stats(written["train"][0] / 255.0)
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(ds.std, std, rtol=1e-5)
    assert ds.val.y.tolist() != sorted(ds.val.y.tolist())  # shuffled (seeded), not class by class


def test_image_folder_sizes_must_agree_unless_resized(tmp_path):
    root = tmp_path / "imgs"
    write_folder(root, classes=("a",), size=(8, 8))
    write_folder(root, classes=("b",), size=(6, 10), seed=1)
    with pytest.raises(DataError, match=r"images differ in size .* 8x8, .* 6x10\); give resize: \[H, W\]"):
        load_dataset("image_folder", {"root": str(root)})
    ds = load_dataset("image_folder", {"root": str(root), "resize": [4, 4], "channels": 3})
    assert ds.input_shape == (3, 4, 4) and ds.n_classes == 2
    assert torch.equal(ds.train.x[:, 0], ds.train.x[:, 2])  # grayscale files, three equal channels
    path = root / "train" / "b" / "00.png"
    want = np.asarray(Image.open(path).convert("RGB").resize((4, 4), Image.BILINEAR)).transpose(2, 0, 1)
    every = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    assert any(torch.equal((img * 255).round().to(torch.uint8), torch.from_numpy(want.copy())) for img in every)


def test_image_folder_channels_inferred_or_given(tmp_path):
    root = tmp_path / "imgs"
    write_folder(root, classes=("a",), mode="L")
    rgb = write_folder(root, classes=("b",), mode="RGB", seed=1)["train"][0]
    assert load_dataset("image_folder", {"root": str(root)}).input_shape == (3, 8, 8)  # one RGB file: 3
    gray = load_dataset("image_folder", {"root": str(root), "channels": 1})
    assert gray.input_shape == (1, 8, 8)
    luminance = {np.asarray(Image.fromarray(img.transpose(1, 2, 0)).convert("L"))[None].tobytes() for img in rgb}
    every = set(_rows(gray.train)) | set(_rows(gray.val)) | set(_rows(gray.test))
    assert luminance <= every


def test_image_folder_skips_hidden_entries_and_names_an_unreadable_file(tmp_path):
    root = tmp_path / "imgs"
    write_folder(root)
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (root / "train" / "a" / ".DS_Store").write_bytes(b"\0\1")
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    assert load_dataset("image_folder", {"root": str(root)}).n_classes == 3
    (root / "train" / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read .*broken\.png as an image .*; replace or remove it"):
        load_dataset("image_folder", {"root": str(root)})


# ---------------------------------------------------------------- arrays


def test_arrays_images_uint8_with_their_own_val(tmp_path):
    (x, y), (xv, yv), (xt, yt) = (labelled(n, 3, (3, 4, 4), seed=s) for n, s in ((24, 0), (6, 1), (9, 2)))
    path = write_npz(tmp_path / "data.npz", x_train=x, y_train=y, x_val=xv, y_val=yv, x_test=xt, y_test=yt)
    ds = load_dataset("arrays", {"path": str(path)})
    assert ds.input_shape == (3, 4, 4) and ds.n_classes == 3
    for split, (sx, sy) in ((ds.train, (x, y)), (ds.val, (xv, yv)), (ds.test, (xt, yt))):
        assert _pairs(split) == _written(sx, sy)
        assert split.x.min() >= 0 and split.x.max() <= 1
    mean, std = _stats(x / 255.0)
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(ds.std, std, rtol=1e-5)


def test_arrays_with_every_split_given_needs_no_sklearn(tmp_path, monkeypatch):
    """Nothing to carve: no scikit-learn import (the GPU benchmark's image has none); each split keeps all its
    examples in the seeded shuffled order."""
    (x, y), (xv, yv), (xt, yt) = (labelled(n, 3, (3, 4, 4), seed=s) for n, s in ((24, 0), (6, 1), (9, 2)))
    path = write_npz(tmp_path / "data.npz", x_train=x, y_train=y, x_val=xv, y_val=yv, x_test=xt, y_test=yt)
    monkeypatch.setitem(sys.modules, "sklearn.model_selection", None)  # importing it now raises
    ds = load_dataset("arrays", {"path": str(path), "split_seed": 3})
    order = np.random.default_rng(3).permutation(24)
    assert torch.equal(ds.train.y, torch.from_numpy(y[order]))


def test_arrays_flat_floats_become_features_for_mlp(tmp_path):
    x, y = labelled(40, 3, (5,), seed=0, floats=True)
    xt, yt = labelled(9, 3, (5,), seed=1, floats=True)
    x[:, 2] = xt[:, 2] = 0.5  # a constant feature: left unscaled (std 1)
    path = write_npz(tmp_path / "data.npz", x_train=x, y_train=y.astype(np.uint8), x_test=xt, y_test=yt)
    ds = load_dataset("arrays", {"path": str(path), "val_fraction": 0.25})
    assert ds.input_shape == (5, 1, 1) and (len(ds.train), len(ds.val), len(ds.test)) == (30, 10, 9)
    assert torch.equal(ds.test.x.view(9, 5), torch.from_numpy(xt)[_order(ds.test, xt)])
    train = x[_order(ds.train, x)].astype(np.float64)
    np.testing.assert_allclose(ds.mean, train.mean(axis=0), rtol=1e-5)
    want_std = train.std(axis=0)
    want_std[2] = 1.0
    np.testing.assert_allclose(ds.std, want_std, rtol=1e-5)
    logits = build_model("mlp", {}, ds.info)(ds.test.x)
    assert logits.shape == (9, 3)


def _order(split: Split, x: np.ndarray) -> list[int]:
    """The rows of ``x`` (floats, (N, D)) in the order ``split`` holds them."""
    index = {row.tobytes(): i for i, row in enumerate(x)}
    return [index[row.numpy().tobytes()] for row in split.x.view(len(split), -1)]


def test_arrays_given_mean_and_std(tmp_path):
    (x, y), (xt, yt) = labelled(30, 3, (3, 2, 2), seed=0), labelled(6, 3, (3, 2, 2), seed=1)
    path = write_npz(tmp_path / "data.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    ds = load_dataset("arrays", {"path": str(path), "mean": [0.5], "std": [0.1, 0.2, 0.3]})
    assert ds.mean == (0.5, 0.5, 0.5) and ds.std == pytest.approx((0.1, 0.2, 0.3))
    with pytest.raises(DataError, match="mean has 2 values for 3 channels"):
        load_dataset("arrays", {"path": str(path), "mean": [0.5, 0.5]})


# ---------------------------------------------------------------- torchvision references


def _write_mnist_raw(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """40 train and 20 test images in torchvision's uncompressed IDX layout (labels i % 10)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    out = {}
    for prefix, n, seed in (("train", 40, 0), ("t10k", 20, 1)):
        x = np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 10
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + x.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + y.tobytes())
        out[prefix] = (x[:, None], y)
    return out


def test_torchvision_train_convention_reads_written_mnist(tmp_path):
    written = _write_mnist_raw(tmp_path)
    ds = load_dataset("torchvision:MNIST", {"root": str(tmp_path)})
    assert ds.name == "torchvision:MNIST" and ds.input_shape == (1, 28, 28) and ds.n_classes == 10
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 10, 20)  # val carved from train=True
    assert _pairs(ds.test) == _written(*written["t10k"])
    assert _pairs(ds.train) | _pairs(ds.val) == _written(*written["train"])


def test_torchvision_split_convention_reads_written_country211(tmp_path):
    written = write_folder(tmp_path / "country211", splits=("train", "valid", "test"), classes=("AD", "AE", "AF"))
    params = {"root": str(tmp_path), "val_split": "valid"}
    ds = load_dataset("torchvision:Country211", params)
    assert ds.input_shape == (3, 8, 8)  # torchvision's loader opens every image as RGB
    for split, name in ((ds.train, "train"), (ds.val, "valid"), (ds.test, "test")):
        gray = Split(split.x[:, :1].contiguous(), split.y)
        assert _pairs(gray) == _written(*written[name])


def test_torchvision_class_without_splits_is_carved(tmp_path):
    params = {"size": 60, "image_size": [1, 8, 8], "num_classes": 3}
    ds = load_dataset("torchvision:FakeData", params)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (42, 6, 12) and ds.input_shape == (1, 8, 8)
    from torchvision.transforms.functional import pil_to_tensor

    fake = torchvision.datasets.FakeData(size=60, image_size=(1, 8, 8), num_classes=3)
    want = {(pil_to_tensor(img).numpy().tobytes(), label) for img, label in (fake[i] for i in range(60))}
    assert _pairs(ds.train) | _pairs(ds.val) | _pairs(ds.test) == want


def test_torchvision_parameters_are_the_class_and_kdtune_ones():
    assert DATASETS.validate("torchvision:SVHN", {"root": "r"})["train_split"] == "train"
    assert DATASETS.validate("torchvision:EMNIST", {"root": "r", "split": "letters"})["split"] == "letters"
    with pytest.raises(ConfigError, match="torchvision:EMNIST': missing required parameter 'split'"):
        DATASETS.validate("torchvision:EMNIST", {"root": "r"})
    with pytest.raises(ConfigError, match="unexpected parameter 'split'"):
        DATASETS.validate("torchvision:SVHN", {"root": "r", "split": "train"})
    with pytest.raises(ConfigError, match="missing required parameter 'root'"):
        DATASETS.validate("torchvision:SVHN", {})
    with pytest.raises(ConfigError, match="must be torchvision:<Class>"):
        DATASETS.validate("os:system", {})
    with pytest.raises(ConfigError, match=r"use \{name: image_folder, root: DIR\}"):
        DATASETS.validate("torchvision:ImageFolder", {"root": "r"})


def test_torchvision_root_without_the_files_says_how_to_get_them(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("torchvision:SVHN", {"root": str(tmp_path)})
    message = str(info.value)
    assert f"cannot read it under {tmp_path}" in message and "\n" not in message
    assert f"torchvision.datasets.SVHN('{tmp_path}', split='train', download=True)" in message


# ---------------------------------------------------------------- through a study file


def _own_data(kind: str, root: Path) -> dict:
    if kind == "image_folder":
        write_folder(root / "imgs")
        return {"name": "image_folder", "root": str(root / "imgs")}
    if kind == "arrays":
        (x, y), (xt, yt) = labelled(30, 3, (1, 4, 4), seed=0), labelled(9, 3, (1, 4, 4), seed=1)
        return {"name": "arrays", "path": str(write_npz(root / "data.npz", x_train=x, y_train=y, x_test=xt, y_test=yt))}
    return {"name": "torchvision:FakeData", "size": 30, "image_size": [3, 4, 4], "num_classes": 3}


@pytest.mark.parametrize("kind", ["image_folder", "arrays", "torchvision"])
def test_a_study_names_own_data(kind, tmp_path):
    (tmp_path / "data").mkdir()
    path = write_study(tmp_path / "study.yaml", base_study(dataset=_own_data(kind, tmp_path / "data")))
    cfg = load_study(path)
    assert cfg.dataset.params["val_fraction"] == 0.1 and cfg.dataset.params["stream"] == "auto"  # defaults filled
    ds = load_dataset(cfg.dataset.name, cfg.dataset.params)
    assert ds.n_classes == 3
    teacher = build_model(cfg.teacher.model.name, cfg.teacher.model.params, ds.info)
    assert teacher(ds.test.x).shape == (len(ds.test), 3)
    shutil.rmtree(tmp_path / "data")  # a Ray worker may not see the files: re-validating a trial never reads them
    assert with_overrides(cfg, {"method.temperature": 2.0}).dataset == cfg.dataset


# ---------------------------------------------------------------- bad data: one line, exit 2, nothing written


def _folder_without_classes(data: Path) -> dict:
    (data / "imgs" / "train").mkdir(parents=True)
    return {"name": "image_folder", "root": str(data / "imgs")}


def _folder_with_an_empty_class(data: Path) -> dict:
    write_folder(data / "imgs")
    (data / "imgs" / "train" / "d").mkdir()
    return {"name": "image_folder", "root": str(data / "imgs")}


def _classes_differ(data: Path) -> dict:
    write_folder(data / "imgs")
    write_folder(data / "imgs", splits=("test",), classes=("a", "b", "d"))
    return {"name": "image_folder", "root": str(data / "imgs")}


def _npz(data: Path, **arrays: np.ndarray) -> dict:
    return {"name": "arrays", "path": str(write_npz(data / "data.npz", **arrays))}


X, Y = labelled(12, 3, (1, 4, 4), seed=0)
BAD = {
    "empty_folder": (_folder_without_classes, "holds no class folders; lay the images out as ROOT/train/<class>/"),
    "no_folder": (lambda d: {"name": "image_folder", "root": str(d / "nope")}, "is not a folder"),
    "empty_class": (_folder_with_an_empty_class, "class folder(s) d in"),
    "classes_differ": (_classes_differ, "differ from train/'s (missing: c; extra: d); give every split the same"),
    "npz_missing_arrays": (lambda d: _npz(d, x_train=X, y_train=Y), "lacks x_test, y_test"),
    "npz_misnamed": (lambda d: _npz(d, x_train=X, y_train=Y, x_test=X, y_test=Y, x_valid=X),
                     "an array 'x_valid' (did you mean 'x_val'?)"),
    "npz_floats_outside": (lambda d: _npz(d, x_train=X * 0.01, y_train=Y, x_test=X / 255.0, y_test=Y),
                           "], outside [0, 1]; scale floats to [0, 1] or save uint8 pixels"),
    "npz_negative_label": (lambda d: _npz(d, x_train=X, y_train=Y - 1, x_test=X, y_test=Y), "y_train holds label -1"),
    "svhn_missing_root": (lambda d: {"name": "torchvision:SVHN", "root": str(d / "svhn")},
                          "is not a folder and kdtune never downloads; download it once"),
    "unknown_torchvision": (lambda d: {"name": "torchvision:SVNH", "root": str(d)},
                            "has no dataset class 'SVNH' (did you mean 'SVHN'?)"),
    "stream_true": (lambda d: {**_npz(d, x_train=X, y_train=Y, x_test=X, y_test=Y), "stream": True},
                    "stream: true cannot stream: an .npz archive is read whole"),
    "over_the_limit": (lambda d: {**_npz(d, x_train=X, y_train=Y, x_test=X, y_test=Y), "max_memory_gb": 1.0e-9},
                       "GiB as float32 cannot stream: an .npz archive is read whole"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_fails_at_load_with_one_line(case, tmp_path, clean_cwd, capsys):
    make, expect = BAD[case]
    (tmp_path / "data").mkdir()
    path = write_study(tmp_path / "study.yaml", base_study(dataset=make(tmp_path / "data")))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = cli.main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith(f"kdtune: error: {path}: dataset: ") and err.count("\n") == 1, err
    assert expect in err and "Traceback" not in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert list(clean_cwd.iterdir()) == []


def test_augmenting_data_that_are_not_images_stops_the_study_before_anything_trains(tmp_path, clean_cwd, capsys,
                                                                                    monkeypatch):
    x, y = labelled(60, 3, (12,), seed=0, floats=True)  # feature vectors: (12, 1, 1) examples
    data = {"name": "arrays", "path": str(write_npz(tmp_path / "f.npz", x_train=x, y_train=y, x_test=x, y_test=y))}
    raw = base_study(dataset=data)
    raw["student"]["augment"] = {"crop_padding": 2}
    monkeypatch.setenv("KDTUNE_CACHE_DIR", str(tmp_path / "cache"))
    code = cli.main([str(write_study(tmp_path / "study.yaml", raw))])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "student.augment: needs images (C, H, W), but the examples have shape (12, 1, 1); remove augment" in err
    assert not (tmp_path / "cache").exists()  # no teacher was trained
