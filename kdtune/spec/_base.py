"""Building blocks of the spec types: strict frozen models and ``{name: ..., **params}`` components.

The spec layer checks structure only (types, ranges, required fields). Whether a component's name is
registered and its parameters fit the registered function is checked one layer up, in ``kdtune.config``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class Strict(BaseModel):
    """A frozen model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Component(BaseModel):
    """``{name: ..., **params}`` in YAML: a registered component of kind ``kind`` and its parameters.

    A bare string is read as ``{name: <string>}``; ``Component(name=..., params={...})`` is the same as
    ``{name: ..., **params}`` (which is why no registered component may take a parameter called ``params``
    or ``name``). ``params`` are kept as given here; ``kdtune.config``
    validates them against the registry of ``kind`` and fills in the defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ClassVar[str] = ""
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @pydantic.model_serializer
    def _flat(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}

    @pydantic.model_validator(mode="before")
    @classmethod
    def _split_params(cls, raw: Any) -> Any:
        if isinstance(raw, Component):
            return {"name": raw.name, "params": raw.params}
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict) or "name" not in raw:
            raise ValueError(f"expected a mapping with a 'name' key, e.g. {{name: ..., ...}}; got {raw!r}")
        if set(raw) == {"name", "params"} and isinstance(raw["params"], dict):
            return raw  # the split form: ModelSpec(name=..., params={...}) (no component has a 'params' parameter)
        raw = dict(raw)
        name = raw.pop("name")
        if not isinstance(name, str):
            raise ValueError(f"'name' must be a string, got {name!r}")
        return {"name": name, "params": raw}


class DatasetSpec(Component):
    kind: ClassVar[str] = "dataset"


class ModelSpec(Component):
    kind: ClassVar[str] = "model"


class MethodSpec(Component):
    kind: ClassVar[str] = "method"


class AttackSpec(Component):
    kind: ClassVar[str] = "attack"
