"""The study's spec types: typed, frozen, structure only. This layer imports nothing else of kdtune.

``kdtune.config`` sits above it: it reads the YAML, checks every component against its registry and
every metric name against ``kdtune.metrics``, and applies search overrides.
"""

from kdtune.spec._base import (
    AttackSpec,
    Component,
    DatasetSpec,
    MethodSpec,
    ModelSpec,
    NonNegFloat,
    PositiveFloat,
    PositiveInt,
    Strict,
)
from kdtune.spec._parts import (
    AblationSpec,
    AdversarySpec,
    AutoAttackSpec,
    EvaluationSpec,
    LatencySpec,
    OutputSpec,
    PenaltySpec,
    PreprocessingSpec,
    RaySpec,
    ResourcesSpec,
    TeacherSpec,
    TrackingSpec,
    TrainSpec,
)
from kdtune.spec._recipe import AugmentSpec, EarlyStoppingSpec, OptimizerSpec, ScheduleSpec
from kdtune.spec._records import Constraint, Mode, Objective, Op, Reference, ReferenceRow
from kdtune.spec._search import (
    CategoricalDist,
    Distribution,
    FifoSchedulerSpec,
    FloatDist,
    IntDist,
    MoashaSchedulerSpec,
    ObjectiveSpec,
    SamplerSpec,
    Scalar,
    SchedulerSpec,
    SearchSpec,
)
from kdtune.spec._study import ReferenceRowSpec, ReferenceSpec, ReportSpec, StudyConfig, get_path, set_path

__all__ = [
    "AblationSpec", "AdversarySpec", "AttackSpec", "AugmentSpec", "AutoAttackSpec", "CategoricalDist", "Component",
    "Constraint", "DatasetSpec", "Distribution", "EarlyStoppingSpec", "EvaluationSpec", "FifoSchedulerSpec",
    "FloatDist", "IntDist", "LatencySpec", "MethodSpec", "MoashaSchedulerSpec", "Mode", "ModelSpec", "NonNegFloat",
    "Objective", "ObjectiveSpec", "Op", "OptimizerSpec", "OutputSpec", "PenaltySpec", "PositiveFloat", "PositiveInt",
    "PreprocessingSpec", "RaySpec", "Reference", "ReferenceRow", "ReferenceRowSpec", "ReferenceSpec", "ReportSpec",
    "ResourcesSpec", "SamplerSpec", "Scalar", "ScheduleSpec", "SchedulerSpec", "SearchSpec", "Strict", "StudyConfig",
    "TeacherSpec", "TrackingSpec", "TrainSpec", "get_path", "set_path",
]
