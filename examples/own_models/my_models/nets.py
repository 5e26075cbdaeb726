"""This project's own networks, written without kdtune: a small CNN teacher and a smaller CNN student."""

from __future__ import annotations

from torch import nn


class DigitCNN(nn.Module):
    """conv(width) -> pool -> conv(2*width) -> pool -> linear(hidden) -> linear(classes), for 1x28x28 digits."""

    def __init__(self, *, width: int = 16, hidden: int = 64, n_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, w, 14, 14)
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 2w, 7, 7)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 7 * 7, hidden), nn.ReLU(),
                                  nn.Linear(hidden, n_classes))

    def forward(self, x):
        return self.head(self.features(x))


def build_teacher(width: int = 16, n_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The teacher as this project trains it (train_teacher.py)."""
    return DigitCNN(width=width, hidden=64, n_classes=n_classes, in_channels=in_channels)
