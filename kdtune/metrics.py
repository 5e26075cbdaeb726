"""Metric names: one typed vocabulary, used everywhere a name is built or read.

A name is ``<group>/<kind>[@<eps>][/<stat>]``:

- accuracy on a split: ``val/acc``, ``test/acc``; under attack at an L-inf radius: ``val/robust_acc@0.1``
  (PGD), ``test/fgsm_acc@0.1``, ``test/autoattack_acc@0.1``;
- ``test_autoattack_images/...``: the same measured on the images AutoAttack attacks (the first
  ``evaluation.autoattack.n_samples`` test images);
- costs: ``latency/ms_b1`` (milliseconds per call at batch 1), ``model/params`` (every parameter, frozen
  or not), ``model/flops`` (per image, torch's FLOP counter), ``model/bytes`` (the serialized weights);
- how far a cost can be trusted: ``latency/spread_ms_b1`` (max - min over the interleaved repeats of each
  repeat's figure) and ``model/onnx_max_abs_diff`` (ONNX Runtime's logits against PyTorch's);
- ``jacobian/norm``: the mean input-Jacobian Frobenius norm over the first ``evaluation.n_jacobian``
  images of the *test* split;
- ``seeds/n`` and ``<metric>/mean``, ``<metric>/ci95`` over repeated seeds;
- ``rung/<objective>`` (``rung/val/robust_acc@0.1``) and ``rung/epoch``: an objective measured cheaply at an
  early-stopping rung (``search.scheduler: moasha``), never a final metric.

MLflow forbids ``@``: ``Metric.mlflow`` spells it ``_at_`` (``val/robust_acc_at_0.1``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from kdtune.spec import EvaluationSpec

SPLITS = ("val", "test")
AA_SUBSET = "test_autoattack_images"  # metrics measured on the images AutoAttack attacks
ATTACK_KINDS = {"pgd": "robust_acc", "fgsm": "fgsm_acc", "autoattack": "autoattack_acc"}
COST_GROUPS = ("latency", "model")  # what a model costs to run and to ship: no split
STATS = ("mean", "ci95")
Attack = Literal["pgd", "fgsm", "autoattack"]

_NAME = re.compile(rf"(?P<group>[a-z0-9_]+)/(?P<kind>[a-z0-9_]+)(?:@(?P<eps>[0-9.e+-]+))?"
                   rf"(?:/(?P<stat>{'|'.join(STATS)}))?")
_UNSAFE = re.compile(r"[^\w\-. :/]")


def eps_name(eps: float) -> str:
    """How an eps appears in metric names: 0.1 -> '0.1', 0.05 -> '0.05'."""
    return f"{eps:g}"


@dataclass(frozen=True)
class Metric:
    """One metric name, parsed: ``Metric.parse("val/robust_acc@0.1")`` has group ``val``, kind
    ``robust_acc``, eps 0.1; ``str()`` gives the name back."""

    group: str
    kind: str
    eps: float | None = None
    stat: str | None = None

    def __str__(self) -> str:
        name = f"{self.group}/{self.kind}"
        if self.eps is not None:
            name += f"@{eps_name(self.eps)}"
        return f"{name}/{self.stat}" if self.stat else name

    @classmethod
    def parse(cls, name: str) -> Metric:
        """The parts of ``name``; a name outside the vocabulary raises ``ValueError``."""
        match = _NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"'{name}' is not a metric name (<group>/<kind>[@<eps>][/mean|/ci95])")
        eps = match["eps"]
        return cls(match["group"], match["kind"], float(eps) if eps is not None else None, match["stat"])

    @property
    def split(self) -> str | None:
        """The data split it is measured on (``val`` or ``test``); None for costs."""
        if self.group in SPLITS:
            return self.group
        if self.group in (AA_SUBSET, "jacobian"):
            return "test"
        return None

    @property
    def mlflow(self) -> str:
        return mlflow_key(str(self))

    @property
    def base(self) -> Metric:
        """The metric without its seed statistic: ``val/acc/mean`` -> ``val/acc``."""
        return replace(self, stat=None)


def mlflow_key(name: str) -> str:
    """A name MLflow accepts: ``val/robust_acc@0.1`` -> ``val/robust_acc_at_0.1``; any other character
    outside letters, digits and ``_ - . : / space`` becomes ``_``."""
    return _UNSAFE.sub("_", name.replace("@", "_at_"))


def acc(split: str) -> str:
    """Clean accuracy on ``split``: ``val/acc``."""
    return str(Metric(split, "acc"))


def attacked_acc(split: str, eps: float, attack: Attack = "pgd") -> str:
    """Accuracy under ``attack`` at radius ``eps``: ``val/robust_acc@0.1`` (PGD), ``test/fgsm_acc@0.1``."""
    return str(Metric(split, ATTACK_KINDS[attack], eps))


def latency(batch_size: int) -> str:
    """Milliseconds per call at ``batch_size``: ``latency/ms_b1``."""
    return str(Metric("latency", f"ms_b{batch_size}"))


def latency_spread(batch_size: int) -> str:
    """The spread of the latency at ``batch_size`` over the interleaved repeats: ``latency/spread_ms_b1``."""
    return str(Metric("latency", f"spread_ms_b{batch_size}"))


def latency_batch(name: str) -> int | None:
    """The batch size of a latency metric (``latency/ms_b256`` -> 256); None for any other metric, its
    spread included."""
    match = re.fullmatch(r"latency/ms_b(\d+)", name)
    return int(match[1]) if match else None


def spread_batch(name: str) -> int | None:
    """The batch size of a latency spread (``latency/spread_ms_b256`` -> 256); None for any other metric."""
    match = re.fullmatch(r"latency/spread_ms_b(\d+)", name)
    return int(match[1]) if match else None


def is_latency(name: str) -> bool:
    """Whether ``name`` is measured by the latency protocol: a latency, its spread or the ONNX check."""
    return name.startswith("latency/") or name == ONNX_MAX_ABS_DIFF


def eps_of(name: str) -> float:
    """The attack radius in ``name`` (``val/robust_acc@0.1`` -> 0.1); infinity where it has none, so that
    sorting by it puts such names last."""
    metric = parse_or_none(name)
    return math.inf if metric is None or metric.eps is None else metric.eps


def parse_or_none(name: str) -> Metric | None:
    """``Metric.parse(name)``, or None for a name outside the vocabulary (e.g. a user's column)."""
    try:
        return Metric.parse(name)
    except ValueError:
        return None


def is_attacked_acc(name: str, split: str, attack: Attack = "pgd") -> bool:
    """Whether ``name`` is ``<split>/<attack>_acc@<eps>`` itself (not a seed statistic of it)."""
    metric = parse_or_none(name)
    return (metric is not None and metric.group == split and metric.kind == ATTACK_KINDS[attack]
            and metric.eps is not None and metric.stat is None)


def mean_of(name: str) -> str:
    return f"{name}/mean"


def ci95_of(name: str) -> str:
    return f"{name}/ci95"


PARAMS = str(Metric("model", "params"))
FLOPS = str(Metric("model", "flops"))  # per image: 2 x the multiply-adds of matmuls and convolutions
BYTES = str(Metric("model", "bytes"))  # torch.save of the state_dict
COUNTS = (PARAMS, FLOPS, BYTES)  # deterministic costs: whole numbers, compared as the teacher's over a student's
JACOBIAN_NORM = str(Metric("jacobian", "norm"))  # on the first evaluation.n_jacobian test images
SEEDS_DONE = str(Metric("seeds", "n"))  # how many seeds a front member was evaluated over
# max |ONNX Runtime's logits - PyTorch's| on a fixed input (evaluation.latency.runtime: onnxruntime)
ONNX_MAX_ABS_DIFF = str(Metric("model", "onnx_max_abs_diff"))


RUNG_EPOCH = "rung/epoch"  # the epoch of a result measured at an early-stopping rung (kdtune.rungs)
RUNG_ATTACKS: dict[str, Attack] = {"robust_acc": "pgd", "fgsm_acc": "fgsm"}  # val kinds a rung attacks for


def at_rung(name: str) -> str:
    """The cheap measurement of objective ``name`` at a rung: ``rung/val/robust_acc@0.1``."""
    return f"rung/{name}"


def rung_problem(name: str) -> str | None:
    """Why objective ``name`` cannot be measured at an early-stopping rung (None if it can): validation
    accuracy, clean or under PGD / FGSM, latency and the model's size can."""
    metric = Metric.parse(name)
    if metric.stat is None and (
        (metric.group == "val" and (metric.kind == "acc" or metric.kind in RUNG_ATTACKS))
        or latency_batch(name) is not None or name in COUNTS
    ):
        return None
    return (f"'{name}' cannot be measured at an early-stopping rung (val/acc, val/robust_acc@<eps>, "
            "val/fgsm_acc@<eps>, latency/ms_b<batch>, model/params, model/flops, model/bytes can); "
            "drop it from the objectives or use search.scheduler: {name: fifo}")


def trial_metric_names(spec: EvaluationSpec) -> list[str]:
    """Every final metric a trial reports, in report order."""
    names = [acc(s) for s in SPLITS]
    names += [attacked_acc(s, e) for s in SPLITS for e in spec.eps]
    if spec.fgsm:
        names += [attacked_acc(s, e, "fgsm") for s in SPLITS for e in spec.eps]
    names += [name for b in spec.latency.batch_sizes for name in (latency(b), latency_spread(b))]
    onnx = [ONNX_MAX_ABS_DIFF] if spec.latency.runtime == "onnxruntime" else []
    return [*names, *COUNTS, *onnx, JACOBIAN_NORM]


def autoattack_metric_names(spec: EvaluationSpec) -> list[str]:
    """The AutoAttack metric columns a study reports: none unless ``spec.autoattack.enabled``."""
    return [attacked_acc("test", e, "autoattack") for e in spec.autoattack.eps] if spec.autoattack.enabled else []


def objective_problem(name: str, what: str = "objectives") -> str | None:
    """Why ``name`` cannot be an objective (None if it can): objectives steer the search, so they must be
    measured on the validation split or be costs; a test-split metric would leak the test set into it.
    Constraints steer it too (``what="constraints"``)."""
    metric = Metric.parse(name)
    if spread_batch(name) is not None or name == ONNX_MAX_ABS_DIFF:
        what = "the latency measurement's noise" if name != ONNX_MAX_ABS_DIFF else "a check of the ONNX export"
        return (f"'{name}' is {what}, not a cost of the model; search on "
                f"'{latency(spread_batch(name) or 1)}' instead")
    if metric.split == "val" or metric.group in COST_GROUPS:
        return None
    on_val = Metric("val", metric.kind, metric.eps)
    fix = f"; search on '{on_val}' instead" if metric.group in ("test", AA_SUBSET) else ""
    where = f"is measured on the {metric.split} split" if metric.split else "is not a measurement of the model"
    return (f"'{name}' {where}, and {what} may only be validation "
            f"metrics (val/...), latency or size (latency/..., model/params, model/flops, model/bytes){fix}")


def seed_summary(runs: list[dict[str, float]]) -> dict[str, float]:
    """``<metric>/mean`` and ``<metric>/ci95`` (half-width of the 95% t-interval, ``kdtune.intervals``) over
    ``runs`` (one dict of metrics per seed), for every metric they all have."""
    from kdtune.intervals import t_interval

    out = {}
    for name in set.intersection(*(set(r) for r in runs)):
        interval = t_interval([r[name] for r in runs])
        out[mean_of(name)] = interval.mean
        out[ci95_of(name)] = interval.half_width
    return out
