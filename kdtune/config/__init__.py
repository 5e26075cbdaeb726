"""Typed, frozen study config and ``load_study(path)`` (the only YAML reader)."""

from kdtune.config._load import load_study
from kdtune.config._search import (
    CategoricalDist,
    Distribution,
    FloatDist,
    IntDist,
    ObjectiveSpec,
    SamplerSpec,
    SearchSpec,
)
from kdtune.config._specs import (
    AdversarySpec,
    AttackSpec,
    AutoAttackSpec,
    Component,
    DatasetSpec,
    EvaluationSpec,
    LatencySpec,
    MethodSpec,
    ModelSpec,
    OutputSpec,
    PenaltySpec,
    RaySpec,
    ResourcesSpec,
    TeacherSpec,
    TrackingSpec,
    TrainSpec,
    registry_of,
)
from kdtune.config._study import StudyConfig, format_validation_error, get_path, set_path

__all__ = [
    "AdversarySpec", "AttackSpec", "AutoAttackSpec", "CategoricalDist", "Component", "DatasetSpec", "Distribution",
    "EvaluationSpec", "FloatDist", "IntDist", "LatencySpec", "MethodSpec", "ModelSpec", "ObjectiveSpec",
    "OutputSpec", "PenaltySpec", "RaySpec", "ResourcesSpec", "SamplerSpec", "SearchSpec", "StudyConfig", "TeacherSpec",
    "TrackingSpec", "TrainSpec", "format_validation_error", "get_path", "load_study", "registry_of", "set_path",
]
