"""Datasets as tensors in memory, or streamed from their files when too large (``StreamedSplit``): the
bundled 5k MNIST subset and scikit-learn's 8x8 digits (both offline), torchvision's MNIST / Fashion-MNIST and CIFAR-10, and the user's own data: a folder of
images (``image_folder``), a ``.npz`` archive (``arrays``) or any torchvision dataset class
(``torchvision:SVHN``). Pixels are float32 in [0, 1]; models normalize internally.

    ds = load_dataset("mnist_5k", {"n_train": 3000})
    for x, y, idx in ds.train.batches(128, generator=g):
        ...
"""

from kdtune.data import _arrays, _cifar, _digits, _folder, _mnist  # noqa: F401 - registers the datasets
from kdtune.data._core import DEFAULT_ROOT, MNIST_INFO, AnySplit, Batch, DataInfo, Dataset, Split
from kdtune.data._registry import DATASETS, check_files, load_dataset
from kdtune.data._stream import StreamedSplit

__all__ = [
    "DATASETS", "DEFAULT_ROOT", "MNIST_INFO", "AnySplit", "Batch", "DataInfo", "Dataset", "Split", "StreamedSplit",
    "check_files", "load_dataset",
]
