"""Stage: check the user's code before anything is opened or written (the driver lock, MLflow, Ray)."""

from __future__ import annotations

import torch

from kdtune.models import build_model
from kdtune.registry import is_reference
from kdtune.study._run import StudyRun
from kdtune.study._stored import augmented_roles, load_data, load_data_and_teacher


def check(run: StudyRun) -> None:
    """A study that runs the user's code (a model by reference, a pretrained teacher) or augments (images
    only) loads its data and builds that code once first, on the meta device (no memory, no compute): a
    reference that returns no Module, weights that do not fit their model, an MLflow model that cannot be
    loaded, or augmented data that are not images, fail in one line before anything is written or trained."""
    cfg = run.cfg
    models = [spec for spec in (cfg.teacher.model, cfg.student.model) if spec is not None and is_reference(spec.name)]
    if not models and not cfg.teacher.pretrained and not augmented_roles(cfg):
        return
    load_data(run)  # checks that augmented data are images
    with torch.device("meta"):
        for spec in models:
            build_model(spec.name, spec.params, run.data.info)
    if cfg.teacher.pretrained:
        load_data_and_teacher(run)
