"""One configuration end to end, without Ray: build the student and its KD stack, train, evaluate (what
one trial of a sweep runs, and what `kdtune rerun` and seed repeats run again)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from kdtune.attacks import ATTACKS, Budget
from kdtune.errors import ConfigError
from kdtune.evaluate import evaluate_model
from kdtune.methods import Distiller, MethodContext, build_method, own_attack_problem
from kdtune.models import build_model
from kdtune.penalties import PENALTIES
from kdtune.records import Provenance
from kdtune.train import EpochCallback, FitState, Penalty, StateCallback, amp_dtype, fit_student

if TYPE_CHECKING:
    from kdtune.spec import StudyConfig


@dataclass(frozen=True)
class Stack:
    """The KD stack of one configuration, bound to its validated parameters."""

    distiller: Distiller
    penalties: list[Penalty]
    adversary: Callable[..., Tensor] | None
    budget: Budget | None = None  # of a method's own inner maximisation (``Distiller.perturb``)


def build_stack(cfg: StudyConfig, ctx: MethodContext) -> Stack:
    """The method, penalties and adversary of ``cfg``. A method with its own inner maximisation gets the
    budget of the study's attack (eps, step size, steps) instead of the generic attack itself."""
    penalties = [Penalty(n, s.weight, PENALTIES.bind(n, s.params)) for n, s in cfg.penalties.items()]
    adv = cfg.adversary
    attack = adv.attack if adv is not None and adv.enabled else None
    distiller = build_method(cfg.method.name, cfg.method.params, ctx).to(ctx.data.train.device)
    if distiller.owns_attack:
        if attack is None:
            raise ConfigError(own_attack_problem(cfg.method.name, disabled=adv is not None))
        return Stack(distiller, penalties, None, Budget.of(attack.name, attack.params))
    adversary = ATTACKS.bind(attack.name, attack.params) if attack is not None else None
    return Stack(distiller, penalties, adversary)


@dataclass(frozen=True)
class StudentRun:
    student: nn.Module
    history: list[dict[str, float]]
    metrics: dict[str, float]
    provenance: Provenance  # what the student learned from


def run_student(
    cfg: StudyConfig,
    ctx: MethodContext,
    *,
    on_epoch: EpochCallback | None = None,
    on_state: StateCallback | None = None,
    resume: FitState | None = None,
) -> StudentRun:
    """Train the student of ``cfg`` with its method, penalties and adversary, then evaluate it.

    ``on_state`` gets the training state (student, distiller, optimizer, RNGs) after every epoch;
    ``resume``, one such state of the same ``cfg``, continues from it to the same result as one run.
    """
    torch.manual_seed(cfg.seed)
    data = ctx.data
    student = build_model(cfg.student.model.name, cfg.student.model.params, data.info).to(data.train.device)
    stack = build_stack(cfg, ctx)
    history = fit_student(
        student, data, cfg.student, distiller=stack.distiller, penalties=stack.penalties,
        adversary=stack.adversary, budget=stack.budget, seed=cfg.seed, on_epoch=on_epoch, on_state=on_state, resume=resume,
        amp=amp_dtype(cfg.resources.amp, data.train.device),
    )
    metrics = evaluate_model(student, data, cfg.evaluation, seed=cfg.seed)
    learned = {"method": cfg.method.name, **stack.distiller.provenance}
    learned.pop("cache", None)  # where a synthetic set is cached: not what the student learned from
    return StudentRun(student, history, metrics, Provenance.from_dict(learned))


def train_and_time(
    cfg: StudyConfig,
    ctx: MethodContext,
    *,
    device: torch.device,
    on_epoch: EpochCallback | None = None,
    on_state: StateCallback | None = None,
    resume: FitState | None = None,
) -> tuple[StudentRun, dict[str, float]]:
    """What one trial runs: ``run_student``, then its student's in-trial latency on ``device`` (the searcher's
    signal; the report re-measures serially). Under runtime onnxruntime the student is exported and checked
    here, so a student that cannot be exported fails here."""
    from kdtune.latency import measure_latency

    run = run_student(cfg, ctx, on_epoch=on_epoch, on_state=on_state, resume=resume)
    latency = measure_latency({"student": run.student}, ctx.data.input_shape, cfg.evaluation.latency, device=device)
    return run, latency["student"]

