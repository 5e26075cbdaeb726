"""Loading and checking a study: ``load_study(path)`` (the only YAML reader), ``validate_study`` and
``with_overrides``; ``with_root`` and ``relative_locations`` for runs off this machine. The spec types themselves live in ``kdtune.spec`` and are re-exported here."""

from kdtune.config._errors import format_validation_error
from kdtune.config._load import load_study
from kdtune.config._locations import relative_locations, with_root
from kdtune.config._validate import validate_study, with_overrides
from kdtune.registry import registry_of
from kdtune.spec import (
    AdversarySpec,
    AttackSpec,
    AugmentSpec,
    AutoAttackSpec,
    CategoricalDist,
    Component,
    DatasetSpec,
    Distribution,
    EarlyStoppingSpec,
    EvaluationSpec,
    FloatDist,
    IntDist,
    LatencySpec,
    MethodSpec,
    Mode,
    ModelSpec,
    NonNegFloat,
    Objective,
    ObjectiveSpec,
    OptimizerSpec,
    OutputSpec,
    PenaltySpec,
    PositiveFloat,
    PositiveInt,
    PreprocessingSpec,
    RaySpec,
    Reference,
    ReferenceRow,
    ReferenceRowSpec,
    ReferenceSpec,
    ReportSpec,
    ResourcesSpec,
    SamplerSpec,
    Scalar,
    ScheduleSpec,
    SearchSpec,
    Strict,
    StudyConfig,
    TeacherSpec,
    TrackingSpec,
    TrainSpec,
    get_path,
    set_path,
)

__all__ = [
    "format_validation_error", "load_study", "registry_of", "relative_locations", "validate_study", "with_overrides",
    "with_root", "AdversarySpec",
    "AttackSpec", "AugmentSpec", "AutoAttackSpec", "CategoricalDist", "Component", "DatasetSpec", "Distribution",
    "EarlyStoppingSpec", "EvaluationSpec", "FloatDist", "IntDist", "LatencySpec", "MethodSpec", "Mode", "ModelSpec",
    "NonNegFloat", "Objective", "ObjectiveSpec", "OptimizerSpec", "OutputSpec", "PenaltySpec", "PositiveFloat",
    "PositiveInt", "PreprocessingSpec", "RaySpec", "Reference", "ReferenceRow", "ReferenceRowSpec", "ReferenceSpec",
    "ReportSpec", "ResourcesSpec", "SamplerSpec", "Scalar", "ScheduleSpec", "SearchSpec", "Strict", "StudyConfig",
    "TeacherSpec", "TrackingSpec", "TrainSpec", "get_path", "set_path",
]
