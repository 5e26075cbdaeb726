"""A study's structure (``kdtune.spec``) checked against what is registered and what is measured.

``validate_study`` builds the ``StudyConfig`` from a YAML mapping, checks every component's name and
parameters against its registry (filling in the defaults), every objective and reference metric against
``kdtune.metrics``, and raises ``ConfigError`` with one line naming the field and the fix.
``with_overrides`` applies a trial's sampled values and validates the result the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic
from pydantic import BaseModel

import kdtune.components  # noqa: F401 - the built-in registries enroll themselves
from kdtune import metrics
from kdtune.attacks import Budget
from kdtune.config._errors import _model_of, format_validation_error
from kdtune.errors import ConfigError
from kdtune.methods import method_owns_attack, own_attack_problem
from kdtune.registry import did_you_mean, registry_of
from kdtune.spec import Component, StudyConfig, get_path, set_path


def validate_study(raw: Mapping[str, Any], *, source: str) -> StudyConfig:
    """``raw`` (a study in YAML layout) as a checked ``StudyConfig``; any problem raises ``ConfigError``."""
    try:
        cfg = StudyConfig.model_validate(dict(raw))
    except pydantic.ValidationError as err:
        raise ConfigError(f"{source}: {format_validation_error(err)}") from None
    try:
        cfg = _checked_components(cfg, [])
        cfg = cfg.model_copy(update={"penalties": _checked_penalties(cfg)})
        _check_own_attack(cfg)
        _check_metrics(cfg)
        _check_scheduler(cfg)
    except _FieldError as err:
        raise ConfigError(f"{source}: {err}") from None
    return cfg


def with_overrides(cfg: StudyConfig, overrides: Mapping[str, Any]) -> StudyConfig:
    """A new config with each ``"a.b.0": value`` applied to the YAML layout, validated.

    A component's ``name`` (e.g. ``method.name``) is applied first; switching to another name keeps
    only the parameters the new component accepts, so each method starts from its own defaults.
    """
    raw = cfg.to_raw()
    names = {p: v for p, v in overrides.items() if p.endswith(".name")}
    try:
        for path, value in names.items():
            _switch_component(raw, path.removesuffix(".name"), value)
        for path, value in overrides.items():
            if path not in names:
                set_path(raw, path, value)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return validate_study(raw, source="overrides")


class _FieldError(ValueError):
    """A problem at one field of the study: ``<path>: <what and the fix>``."""


def _checked_components(node: Any, loc: list[str]) -> Any:
    """``node`` with every component inside it (at any depth, also inside another component's
    parameters, e.g. a method's ``teacher_model``) validated against its registry."""
    if isinstance(node, Component):
        try:
            params = registry_of(node.kind).validate(node.name, node.params)
        except ConfigError as err:
            raise _FieldError(f"{'.'.join(loc)}: {err}") from None
        params = {k: _checked_components(v, [*loc, k]) for k, v in params.items()}
        return node.model_copy(update={"params": params})
    if isinstance(node, BaseModel):
        update = {}
        for key in type(node).model_fields:
            value = getattr(node, key)
            checked = _checked_components(value, [*loc, key])
            if checked is not value:
                update[key] = checked
        return node.model_copy(update=update) if update else node
    if isinstance(node, dict):
        checked = {k: _checked_components(v, [*loc, str(k)]) for k, v in node.items()}
        return checked if any(checked[k] is not node[k] for k in node) else node
    if isinstance(node, list):
        items = [_checked_components(v, [*loc, str(i)]) for i, v in enumerate(node)]
        return items if any(a is not b for a, b in zip(items, node)) else node
    return node


def _checked_penalties(cfg: StudyConfig) -> dict[str, Any]:
    """Each penalty's parameters validated against the penalty registered under its key."""
    out = {}
    for name, spec in cfg.penalties.items():
        try:
            params = registry_of("penalty").validate(name, spec.params)
        except ConfigError as err:
            raise _FieldError(f"penalties: {err}") from None
        out[name] = spec.model_copy(update={"params": params})
    return out


def _check_own_attack(cfg: StudyConfig) -> None:
    """A method that makes its own adversarial examples (TRADES, ARD, ...), set or among the searched choices,
    takes their budget from the study's enabled pgd (or fgsm) adversary."""
    searched = getattr(cfg.search.space.get("method.name"), "choices", None) or []
    owners = [str(n) for n in [cfg.method.name, *searched] if method_owns_attack(str(n))]
    if not owners:
        return
    adv = cfg.adversary
    if adv is None or not adv.enabled:
        where = "method" if owners[0] == cfg.method.name else "search.space.method.name"
        raise _FieldError(f"{where}: {own_attack_problem(owners[0], disabled=adv is not None)}")
    try:
        Budget.of(adv.attack.name, adv.attack.params)
    except ConfigError as err:
        raise _FieldError(str(err)) from None


def _check_metrics(cfg: StudyConfig) -> None:
    """Objectives and constraints name metrics a trial reports and measures on the validation split (or
    costs); reference rows name reported metrics and searched paths."""
    known = metrics.trial_metric_names(cfg.evaluation)
    for i, obj in enumerate(cfg.search.objectives):
        where = f"search.objectives[{i}]"
        if obj.metric not in known:
            raise _FieldError(f"{where}: unknown metric '{obj.metric}'{did_you_mean(obj.metric, known)}; "
                              f"known: {', '.join(m for m in known if metrics.objective_problem(m) is None)}")
        problem = metrics.objective_problem(obj.metric)
        if problem is not None:
            raise _FieldError(f"{where}: {problem}")
    _check_constraints(cfg, known)
    reported = known + metrics.autoattack_metric_names(cfg.evaluation)  # measured after the sweep
    for i, row in enumerate(cfg.report.reference.rows if cfg.report.reference else []):
        where = f"report.reference.rows[{i}]"
        for metric in row.metrics:
            if metric not in reported:
                raise _FieldError(f"{where}.metrics: unknown metric '{metric}'{did_you_mean(metric, reported)}")
        for path in row.match:
            if path not in cfg.search.space:
                hint = did_you_mean(path, list(cfg.search.space))
                raise _FieldError(f"{where}.match: '{path}' is not searched{hint}; match on search.space paths")
        if row.teacher == bool(row.match):
            raise _FieldError(f"{where}: give either match: {{...}} or teacher: true")


def _check_constraints(cfg: StudyConfig, known: list[str]) -> None:
    """Constraints bound metrics a trial reports, measured where objectives may be (they steer the search
    too); an accuracy's bound is a share in [0, 1]."""
    for i, constraint in enumerate(cfg.search.constraints):
        where, name = f"search.constraints[{i}]", constraint.metric
        if name not in known:
            usable = ", ".join(m for m in known if metrics.objective_problem(m) is None)
            raise _FieldError(f"{where}: unknown metric '{name}'{did_you_mean(name, known)}; known: {usable}")
        problem = metrics.objective_problem(name, "constraints")
        if problem is not None:
            raise _FieldError(f"{where}: {problem}")
        if metrics.Metric.parse(name).split is not None and not 0 <= constraint.threshold <= 1:
            raise _FieldError(f"{where}: '{constraint}': accuracies are shares in [0, 1]; write the bound as one, "
                              f"e.g. '{name} {constraint.op} 0.9'")

def _check_scheduler(cfg: StudyConfig) -> None:
    """MO-ASHA needs a rung before the end of training and objectives it can measure at one."""
    sched = cfg.search.scheduler
    if sched.name != "moasha":
        return
    if not sched.rungs(cfg.student.epochs):
        raise _FieldError(
            f"search.scheduler.min_epochs: {sched.min_epochs} leaves no rung before the end of training "
            f"(student.epochs is {cfg.student.epochs}); set min_epochs below student.epochs, or name: fifo")
    for i, obj in enumerate(cfg.search.objectives):
        problem = metrics.rung_problem(obj.metric)
        if problem is not None:
            raise _FieldError(f"search.objectives[{i}]: {problem}")


def _switch_component(raw: dict[str, Any], path: str, name: Any) -> None:
    node = get_path(raw, path)
    kind = _component_kind(path.split("."))
    if not isinstance(node, dict) or kind is None or node.get("name") == name:
        set_path(raw, f"{path}.name", name)
        return
    registry = registry_of(kind)
    accepted = set(registry.entry(name).schema.model_fields) if name in registry else set()
    set_path(raw, path, {"name": name, **{k: v for k, v in node.items() if k in accepted}})


def _component_kind(loc: list[str]) -> str | None:
    """The registry kind of the component at ``loc`` (e.g. ["student", "model"] -> "model")."""
    cls: Any = StudyConfig
    for key in loc:
        fields = getattr(cls, "model_fields", None)
        if not fields or key not in fields:
            return None
        cls = _model_of(fields[key].annotation)
    return getattr(cls, "kind", None) or None
