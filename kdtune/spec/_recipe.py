"""The training recipe's typed parts: optimizer, learning-rate schedule, early stopping, augmentation.

Each optimizer and each schedule reads the fields it uses and ignores the others (as timm's
``create_optimizer_v2`` and scheduler factory do), so that ``optimizer.name`` and ``schedule.name`` can
themselves be searched over choices that need different fields. Every value is still range-checked.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field

from kdtune.spec._base import NonNegFloat, PositiveFloat, PositiveInt, Strict

NonNegInt = Annotated[int, Field(ge=0)]
Beta = Annotated[float, Field(ge=0, lt=1)]
OptimizerName = Literal["sgd", "adam", "adamw"]
ScheduleName = Literal["constant", "step", "multistep", "cosine", "exponential", "onecycle"]


class OptimizerSpec(Strict):
    """``{name: sgd|adam|adamw, momentum, nesterov, betas}``; a bare name (``sgd``) is ``{name: sgd}``.

    ``momentum`` and ``nesterov`` are SGD's (0.9, as kdtune's plain ``sgd`` always had), ``betas`` are
    Adam's and AdamW's (AdamW: decoupled weight decay, Loshchilov & Hutter, arXiv:1711.05101). The study's
    ``weight_decay`` applies to all three.
    """

    name: OptimizerName = "adam"
    momentum: Beta = 0.9
    nesterov: bool = False
    betas: tuple[Beta, Beta] = (0.9, 0.999)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _bare_name(cls, raw: Any) -> Any:
        return {"name": raw} if isinstance(raw, str) else raw

    @pydantic.model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimizerSpec:
        if self.name == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0; set momentum (e.g. 0.9) or nesterov: false")
        return self


class ScheduleSpec(Strict):
    """The learning rate per epoch (torch's ``lr_scheduler`` classes, stepped once per epoch).

    lr(e) of epoch e = 0, 1, ... (epochs done before it), with base ``lr`` and warm-up W = ``warmup_epochs``:
    e < W: lr·(e+1)/(W+1) (linear warm-up); then, with k = e - W (the schedule starts after the warm-up):
    ``constant`` lr; ``step`` lr·gamma^floor(k/step_size); ``multistep`` lr·gamma^#{milestones <= k};
    ``exponential`` lr·gamma^k; ``cosine`` min_lr + (lr - min_lr)·(1 + cos(pi·k/(E-W)))/2 (SGDR without
    restarts, Loshchilov & Hutter, arXiv:1608.03983); ``onecycle`` (Smith & Topin, arXiv:1708.07120): one
    cosine cycle over the E epochs from max_lr/div_factor up to ``max_lr`` (default: lr) at
    ``pct_start``·E - 1, then down to max_lr/(div_factor·final_div_factor); it has its own warm-up (W is
    ignored) and leaves momentum as the optimizer sets it.
    """

    name: ScheduleName = "constant"
    warmup_epochs: NonNegInt = 0
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1  # step, multistep, exponential
    step_size: PositiveInt = 30  # step (torchvision's ResNet recipe)
    milestones: list[PositiveInt] = Field(default_factory=list)  # multistep
    min_lr: NonNegFloat = 0.0  # cosine (eta_min)
    max_lr: PositiveFloat | None = None  # onecycle; None: the study's lr
    pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.3  # onecycle
    div_factor: PositiveFloat = 25.0  # onecycle
    final_div_factor: PositiveFloat = 1.0e4  # onecycle

    @pydantic.field_validator("milestones")
    @classmethod
    def _increasing(cls, milestones: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"must increase strictly (got {milestones}); e.g. [60, 120, 160]")
        return milestones

    @pydantic.model_validator(mode="after")
    def _multistep_needs_milestones(self) -> ScheduleSpec:
        if self.name == "multistep" and not self.milestones:
            raise ValueError("multistep needs milestones, the epochs where lr is multiplied by gamma; e.g. "
                             "milestones: [60, 120, 160]")
        return self


class EarlyStoppingSpec(Strict):
    """Stop once ``metric`` (measured after every epoch) has not improved by more than ``min_delta`` for
    ``patience`` epochs; the weights of the best epoch are then restored."""

    metric: Literal["val/acc", "train/loss"] = "val/acc"
    patience: PositiveInt = 10
    mode: Literal["max", "min"] = "max"
    min_delta: NonNegFloat = 0.0

    @pydantic.model_validator(mode="after")
    def _mode_fits_metric(self) -> EarlyStoppingSpec:
        want = "min" if self.metric.endswith("loss") else "max"
        if self.mode != want:
            raise ValueError(f"{self.metric} is {'minimised' if want == 'min' else 'maximised'}; set mode: {want}")
        return self


class AugmentSpec(Strict):
    """Training-batch augmentation for images: a random crop of the image padded by ``crop_padding`` zero
    pixels on each side, and a horizontal flip with probability 1/2 (``hflip``); the CIFAR recipe of He
    et al. 2016 (arXiv:1512.03385). Never flip digits or text: set ``hflip: false``."""

    crop_padding: NonNegInt = 4
    hflip: bool = True
