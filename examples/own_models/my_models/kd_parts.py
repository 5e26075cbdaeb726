"""The plugin a study names (``plugins: [my_models.kd_parts]``): registers this project's student with
kdtune's own decorator, so the study can search its width."""

from __future__ import annotations

from torch import nn

from kdtune import MODELS
from my_models.nets import DigitCNN


@MODELS.register("digit_cnn_student")
def digit_cnn_student(*, input_shape: tuple[int, ...], n_classes: int, width: int = 4) -> nn.Module:
    """This project's CNN at student size (``width`` channels in the first conv)."""
    return DigitCNN(width=width, hidden=16, n_classes=n_classes, in_channels=input_shape[0])
