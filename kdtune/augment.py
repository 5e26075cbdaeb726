"""Training-batch augmentation for images, on the training device: pure torch ops on a (B, C, H, W) batch.

Random crop with zero padding and horizontal flip, the CIFAR recipe of He et al. 2016 (arXiv:1512.03385),
as torchvision's ``RandomCrop(padding=p)`` and ``RandomHorizontalFlip()`` apply them one image at a time.
The random draws come from the training loop's CPU generator, so a run (and a resumed one) is reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdtune.errors import ConfigError


def augment_batch(x: Tensor, *, crop_padding: int, hflip: bool, generator: torch.Generator) -> Tensor:
    """Each image of ``x`` (B, C, H, W) cropped at a random offset from its zero-padded copy (``crop_padding``
    pixels on each side) and, with ``hflip``, flipped left-right with probability 1/2. Same shape and
    value range as ``x``; labels are untouched (they are not passed here)."""
    if crop_padding > 0:
        x = random_crop(x, crop_padding, generator)
    if hflip:
        flip = torch.rand(x.shape[0], generator=generator) < 0.5  # (B,)
        x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    return x


def random_crop(x: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """An H x W window of each zero-padded image at offsets drawn uniformly from [0, 2·padding]²."""
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p), zeros outside
    dy, dx = torch.randint(0, 2 * padding + 1, (2, b, 1), generator=generator).to(x.device)  # (B, 1) each
    rows = dy + torch.arange(h, device=x.device)  # (B, H)
    cols = dx + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]  # (B, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


def check_images(input_shape: tuple[int, ...], *, where: str = "") -> None:
    """``augment`` needs images: raise a one-line ``ConfigError`` for examples of another shape (C, H, W),
    such as feature vectors stored as (D, 1, 1)."""
    if len(input_shape) != 3 or min(input_shape[1:]) < 2:
        raise ConfigError(f"{where}augment: needs images (C, H, W), but the examples have shape "
                          f"{tuple(input_shape)}; remove augment from the study's teacher and student sections")
