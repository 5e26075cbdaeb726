"""One-line messages for pydantic's validation errors: the field path, what is wrong, and the fix."""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic import BaseModel

from kdtune.registry import did_you_mean
from kdtune.spec import StudyConfig


def format_validation_error(err: pydantic.ValidationError) -> str:
    """One line for the first error: the field path, what is wrong, and the fix where we can tell."""
    errors = err.errors()
    first = _most_helpful(errors)
    union = _scalar_union(first, errors)
    raw_loc = [str(p) for p in first["loc"][: -1 if union else None]]
    loc = [p for i, p in enumerate(raw_loc) if not _is_tag(raw_loc[:i], p)]
    field = ".".join(loc)
    if first["type"] == "value_error" and loc and isinstance(first["loc"][-1], int):  # a list item's own check
        field = f"{'.'.join(loc[:-1])}[{loc[-1]}]"  # search.constraints[1], as the metric checks name it
    msg = first["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if first["type"] == "extra_forbidden":
        known = _known_fields(raw_loc[:-1])
        hint = did_you_mean(loc[-1], known) if known else ""
        return f"{field}: unknown field{hint or ''}" + ("" if hint else f"; known fields: {', '.join(known)}")
    if first["type"] == "missing":
        return f"{field}: required field is missing; add it to the study file"
    if first["type"] == "union_tag_not_found":
        if loc[-1:] == ["scheduler"]:
            return f"{field}: no 'name' given; add name: {' or '.join(_SCHEDULERS)}"
        return f"{field}: no 'type' given; add type: float, int or categorical"
    if first["type"] == "union_tag_invalid" and loc[-1:] == ["scheduler"]:
        ctx = first.get("ctx", {})
        tag, expected = ctx.get("tag"), ctx.get("expected_tags")
        return f"{field}: unknown {ctx.get('discriminator', 'tag')} {tag!r}; use one of {expected}"
    if union:
        msg = f"must be a single value ({union}), not a list or mapping"
    got = first.get("input")
    shown = "" if isinstance(got, dict) or first["type"].startswith("value_error") else f" (got {got!r})"
    return f"{field}: {msg}{shown}" if field else f"{msg}{shown}"


_SCHEDULERS = ("fifo", "moasha")  # the tags of search.scheduler


def _is_tag(before: list[str], part: str) -> bool:
    """Whether ``part`` of an error's location is a discriminated union's tag, not a field: a search entry's
    type (``float``, ...) or the scheduler's name."""
    return part in ("float", "int", "categorical") or (before[-1:] == ["scheduler"] and part in _SCHEDULERS)


def _most_helpful(errors: list[Any]) -> Any:
    """The first error, except that a misspelled key beats the missing field it was meant to be."""
    first = errors[0]
    if first["type"] == "missing":
        for other in errors:
            if other["type"] == "extra_forbidden" and other["loc"][:-1] == first["loc"][:-1]:
                return other
    return first


def _scalar_union(first: Any, errors: list[Any]) -> str:
    """For a value matching no member of a scalar union (e.g. categorical choices), the members' names."""
    loc = first["loc"]
    members = [e["loc"][-1] for e in errors if e["loc"] and e["loc"][:-1] == loc[:-1]]
    if not loc or len(members) < 2 or not set(members) <= {"bool", "int", "float", "str", "none"}:
        return ""
    return ", ".join(members)


def _known_fields(loc: list[str]) -> list[str]:
    """Field names of the model at ``loc`` inside StudyConfig (for did-you-mean hints); a discriminated
    union's tag in ``loc`` picks its member."""
    cls: Any = StudyConfig
    for key in loc:
        member = _tagged(cls, key)
        if member is not None:
            cls = member
            continue
        fields = getattr(_model_of(cls), "model_fields", None)
        if not fields or key not in fields:
            return []
        cls = fields[key].annotation
    return list(getattr(_model_of(cls), "model_fields", {}))


def _tagged(annotation: Any, tag: str) -> Any:
    """The member of the union of models ``annotation`` whose ``name`` is ``tag``; None if there is none."""
    members = [a for a in _members(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    for member in members:
        name = member.model_fields.get("name")
        if name is not None and tag in getattr(name.annotation, "__args__", ()):
            return member
    return None


def _members(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", ())
    if getattr(annotation, "__metadata__", None) is not None:  # Annotated[Union[...], ...]
        return _members(args[0])
    return list(args)


def _model_of(annotation: Any) -> Any:
    for arg in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
