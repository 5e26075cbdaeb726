"""Typed specs of a study's parts: training, adversary, evaluation, resources and outputs."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from kdtune.spec._base import AttackSpec, ModelSpec, NonNegFloat, PositiveFloat, PositiveInt, Strict
from kdtune.spec._recipe import AugmentSpec, EarlyStoppingSpec, OptimizerSpec, ScheduleSpec


class PenaltySpec(BaseModel):
    """``{weight: w, **params}`` for the penalty named by its key under ``penalties``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    weight: NonNegFloat = 0.0
    params: dict[str, Any] = Field(default_factory=dict)

    @pydantic.model_serializer
    def _flat(self) -> dict[str, Any]:
        return {"weight": self.weight, **self.params}


class TrainSpec(Strict):
    """How a model trains: the recipe (``kdtune.spec._recipe``); the defaults are a constant lr, Adam, no
    label smoothing, clipping, early stopping or augmentation."""

    model: ModelSpec
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    lr: PositiveFloat = 1.0e-3
    weight_decay: NonNegFloat = 0.0
    optimizer: OptimizerSpec = OptimizerSpec()  # or a bare name: adam, sgd, adamw
    schedule: ScheduleSpec = ScheduleSpec()
    # Cross-entropy's label smoothing (Szegedy et al. 2016, arXiv:1512.00567) on hard-label terms.
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    grad_clip: PositiveFloat | None = None  # max global L2 norm of the gradients; None: no clipping
    early_stopping: EarlyStoppingSpec | None = None
    augment: AugmentSpec | None = None


class AdversarySpec(Strict):
    """Adversarial training: each batch is replaced by ``attack(student, x, y)`` when enabled."""

    enabled: bool = True
    attack: AttackSpec


class PreprocessingSpec(Strict):
    """How a pretrained teacher's owner fed it pixels: ``x * pixel_max``, then ``(x - mean) / std`` per channel
    (no mean/std: none). The default is pixels in [0, 1] as they are."""

    pixel_max: PositiveFloat = 1.0
    mean: list[float] | None = None
    std: list[PositiveFloat] | None = None

    @pydantic.model_validator(mode="after")
    def _paired(self) -> PreprocessingSpec:
        if (self.mean is None) != (self.std is None) or (self.mean and len(self.mean) != len(self.std or [])):
            raise ValueError("give mean and std together, one value per channel each")
        return self


class TeacherSpec(TrainSpec):
    """The teacher: trained by kdtune (``adversary`` makes it an adversarially trained, robust teacher), or a
    user's trained network, never retrained and fed as ``preprocessing`` says: ``model`` with its ``weights``
    (a state_dict file, or a checkpoint holding one under ``weights_key``), or a PyTorch model logged to
    MLflow, ``mlflow_model`` (``models:/<name>/<version>``, ``models:/<name>@<alias>`` or
    ``runs:/<run_id>/<path>``), which brings its own network (``model`` is then left out)."""

    model: ModelSpec | None  # required: null only for a teacher from MLflow (filled in below)
    adversary: AdversarySpec | None = None
    weights: str | None = None
    weights_key: str | None = None
    mlflow_model: str | None = None
    preprocessing: PreprocessingSpec | None = None

    @property
    def pretrained(self) -> bool:
        """Whether the teacher is a user's trained network, loaded and never trained by kdtune."""
        return self.weights is not None or self.mlflow_model is not None

    @pydantic.model_validator(mode="before")
    @classmethod
    def _model_from_mlflow(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("mlflow_model") is not None and "model" not in raw:
            return {**raw, "model": None}
        return raw

    @pydantic.field_validator("mlflow_model")
    @classmethod
    def _mlflow_uri(cls, uri: str | None) -> str | None:
        if uri is not None and not re.fullmatch(r"models:/[^/\s]\S*|runs:/[^/\s]+/\S+", uri):
            raise ValueError(f"expected models:/<name>/<version>, models:/<name>@<alias> or runs:/<run_id>/<path>, "
                             f"got {uri!r}")
        return uri

    @pydantic.model_validator(mode="after")
    def _pretrained(self) -> TeacherSpec:
        if self.weights is not None and self.mlflow_model is not None:
            raise ValueError("weights and mlflow_model are two sources of the teacher's weights; give one of them")
        if (self.model is None) == (self.mlflow_model is None):
            raise ValueError("give one of model: {name: ...} (trained by kdtune, or the network weights: fit) and "
                             "mlflow_model: <URI> (a teacher logged to MLflow, which brings its own network)")
        pretrained_only = self.preprocessing is not None and not self.pretrained
        if (self.weights is None and self.weights_key is not None) or pretrained_only:
            raise ValueError("weights_key and preprocessing describe a pretrained teacher; give weights: too "
                             "(preprocessing also goes with mlflow_model:)")
        if self.pretrained and self.adversary is not None:
            source = "weights" if self.weights is not None else "mlflow_model"
            raise ValueError(f"a teacher loaded from {source} is never trained; remove adversary or {source}")
        return self


class LatencySpec(Strict):
    """Latency protocol: one thread, warm-up, interleaved repeats; per model and batch size, the fastest of
    all timed calls (``statistic: min``) or their median, and its spread.

    ``runtime: onnxruntime`` (the default) exports each model with ``torch.onnx.export`` (opset 18, a
    dynamic batch axis), checks its logits against PyTorch's on a fixed input (``model/onnx_max_abs_diff``)
    and times it in ONNX Runtime (CPUExecutionProvider, one intra- and one inter-op thread, sequential):
    what a deployed model costs, not eager PyTorch's per-call overhead. ``runtime: torch`` times the
    PyTorch model itself, in inference mode.

    The fastest call is the model's own cost: the machine's other work only ever adds time to a call, so on
    a shared machine it is the steadiest figure (on a noisy 2-core host, the teacher/student ratio varied by
    0.9-1.2% between runs where the median's varied by 3-9%; docs/performance.md). The median is a typical
    call, with what the rest of the machine adds.

    Spread (``latency/spread_ms_b<batch>``): spread = max_r s_r - min_r s_r in ms, s_r the statistic (min or
    median) of repeat r's ``n_calls`` calls: how far the figure moves from one repeat to the next.
    """

    runtime: Literal["torch", "onnxruntime"] = "onnxruntime"
    batch_sizes: list[PositiveInt] = [1, 256]
    warmup: Annotated[int, Field(ge=1)] = 50
    repeats: PositiveInt = 10  # interleaved rounds: more of them steady the teacher/student ratio (CV)
    n_calls: PositiveInt = 20
    statistic: Literal["min", "median"] = "min"


class AutoAttackSpec(Strict):
    """AutoAttack (L-inf, arXiv:2003.01690) after the sweep on the first ``n_samples`` test images, for
    the teacher and the Pareto-front members (``members: all``: every complete trial)."""

    enabled: bool = False
    eps: list[PositiveFloat] = [0.1]  # ART rejects eps = 0
    n_samples: PositiveInt = 200
    members: Literal["front", "all"] = "front"


class AblationSpec(Strict):
    """Did distillation pay? After the sweep the suggested pick (``members: front``: every front member) is
    trained again with distillation switched off, the ``ce`` method with everything else the same, over the
    study's seeds; the report gives the paired difference in each objective with its 95% interval.
    ``ablation: true`` is short for ``{enabled: true}``."""

    enabled: bool = False
    members: Literal["pick", "front"] = "pick"

    @pydantic.model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value


class EvaluationSpec(Strict):
    """``seeds`` > 1: after the sweep, each Pareto-front member (``seed_members: all``: every complete trial)
    is retrained with that many seeds in all and reported as mean ± 95% interval (the front is then drawn with
    error bars, and two members whose intervals overlap are marked "within noise")."""

    seeds: Annotated[int, Field(ge=1, le=20)] = 1
    seed_members: Literal["front", "all"] = "front"
    eps: list[NonNegFloat] = [0.05, 0.1, 0.2]
    pgd_steps: PositiveInt = 20
    fgsm: bool = True
    n_jacobian: PositiveInt = 256  # jacobian/norm: mean over the first n_jacobian *test* images
    latency: LatencySpec = LatencySpec()
    autoattack: AutoAttackSpec = AutoAttackSpec()
    ablation: AblationSpec = AblationSpec()

    @pydantic.model_validator(mode="after")
    def _ablation_seeds(self) -> EvaluationSpec:
        if self.ablation.enabled and self.seeds < 2:
            raise ValueError("ablation compares over seeds and an interval needs two or more; set seeds: 3 "
                             "(or more) beside it, or ablation: false")
        return self


class ResourcesSpec(Strict):
    """Per trial: CPUs (also its thread count), a GPU share (0.25 packs four trials on one GPU), how
    often a trial whose worker died is retried from its last checkpoint, and how often it checkpoints.

    ``checkpoint_every_s``: a trial reports to the driver (its epochs' metrics, with a checkpoint of its
    training state) after an epoch only once this many seconds have passed since its last report, and
    always at its end; the epochs in between travel with the next report, so MLflow still gets every
    epoch. A worker that dies loses at most this much training. 0 reports and checkpoints every epoch.
    """

    cpu: PositiveFloat = 1.0
    gpu: NonNegFloat = 0.0
    max_failures: Annotated[int, Field(ge=0)] = 2
    checkpoint_every_s: NonNegFloat = 10.0
    # Mixed precision for the student's training forward pass (the KD loss is computed in float32 on its
    # logits): "auto" uses bfloat16 on a GPU that supports it and float32 on the CPU; "bf16" forces it
    # (the CPU too), "off" never. Only steps that differentiate nothing w.r.t. the input use it (no
    # Jacobian/Hessian penalty, logit-only methods; attacks run in float32), and evaluation always runs in
    # float32, so the reported metrics are measured as without it.
    amp: Literal["auto", "bf16", "off"] = "auto"


class RaySpec(Strict):
    """Where trials run: ``address`` of a running Ray cluster (``auto``, ``host:6379``, ``ray://host:10001``).
    Precedence: ``--address`` on the command line, then this, then $RAY_ADDRESS; none starts Ray locally."""

    address: str | None = None


class TrackingSpec(Strict):
    uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db
    experiment: str | None = None  # default: the study name
    # Where a new experiment keeps its artifacts (models, the report); default: beside a SQLite store
    # (<its folder>/mlartifacts), the server's choice for an MLflow server, else <cwd>/mlartifacts.
    artifacts: str | None = None


class OutputSpec(Strict):
    reports: str = "reports"
    ray: str = ".kdtune/ray"
    cache: str | None = None  # default: $KDTUNE_CACHE_DIR, else ~/.cache/kdtune
    # The study's record, where trials accumulate across runs: any SQLAlchemy URL (e.g. PostgreSQL
    # for a cluster); default sqlite:///<working dir>/.kdtune/optuna.db.
    optuna: str | None = None

