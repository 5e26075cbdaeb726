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
    loc = [str(p) for p in first["loc"][: -1 if union else None] if p not in ("float", "int", "categorical")]
    field = ".".join(loc)
    if first["type"] == "value_error" and loc and isinstance(first["loc"][-1], int):  # a list item's own check
        field = f"{'.'.join(loc[:-1])}[{loc[-1]}]"  # search.constraints[1], as the metric checks name it
    msg = first["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if first["type"] == "extra_forbidden":
        known = _known_fields(loc[:-1])
        hint = did_you_mean(loc[-1], known) if known else ""
        return f"{field}: unknown field{hint or ''}" + ("" if hint else f"; known fields: {', '.join(known)}")
    if first["type"] == "missing":
        return f"{field}: required field is missing; add it to the study file"
    if first["type"] == "union_tag_not_found":
        return f"{field}: no 'type' given; add type: float, int or categorical"
    if union:
        msg = f"must be a single value ({union}), not a list or mapping"
    got = first.get("input")
    shown = "" if isinstance(got, dict) or first["type"].startswith("value_error") else f" (got {got!r})"
    return f"{field}: {msg}{shown}" if field else f"{msg}{shown}"


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
    """Field names of the model at ``loc`` inside StudyConfig (for did-you-mean hints)."""
    cls: Any = StudyConfig
    for key in loc:
        fields = getattr(cls, "model_fields", None)
        if not fields or key not in fields:
            return []
        cls = _model_of(fields[key].annotation)
    return list(getattr(cls, "model_fields", {}))


def _model_of(annotation: Any) -> Any:
    for arg in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
