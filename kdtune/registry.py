"""One generic registry for every extension point (datasets, models, losses, penalties, attacks).

An entry is a plain function whose hyperparameters are keyword-only, with the paper's values as
defaults. Parameters are validated at study-load time from the function's signature, so a typo
or a wrong type fails before any training starts::

    @LOSSES.register("hinton_kd")
    def hinton_kd(s, t, y, *, temperature: float = 4.0, alpha: Annotated[float, Field(ge=0, le=1)] = 0.9): ...

    LOSSES.validate("hinton_kd", {"temprature": 2})
    # ConfigError: unexpected parameter 'temprature' (did you mean 'temperature'?)
"""

from __future__ import annotations

import difflib
import inspect
import typing
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pydantic

from kdtune.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def did_you_mean(word: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True)
class Entry:
    """A registered component: its name, function, one-line description and parameter schema."""

    name: str
    fn: Callable[..., Any]
    description: str
    schema: type[pydantic.BaseModel] = field(repr=False)
    check: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)

    @property
    def defaults(self) -> dict[str, Any]:
        """The keyword-only parameters and their defaults (required ones map to ``...``)."""
        return {k: (f.default if not f.is_required() else ...) for k, f in self.schema.model_fields.items()}


def _schema_from_signature(name: str, fn: Callable[..., Any], context: tuple[str, ...]) -> type[pydantic.BaseModel]:
    """A pydantic model of ``fn``'s keyword-only parameters (annotations and defaults kept),
    leaving out the ``context`` ones that kdtune fills in itself."""
    hints = typing.get_type_hints(fn, include_extras=True)  # resolves string annotations
    fields: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.name in context:
            continue
        annotation = hints.get(p.name, Any)
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (annotation, default)
    config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return pydantic.create_model(f"{name}_params", __config__=config, **fields)


RESERVED = frozenset({"name", "params"})  # keys of a component's own spec, never parameters

# Every live registry by kind: a registry enrolls itself when it is created (``registry_of``).
_INDEX: weakref.WeakValueDictionary[str, Registry] = weakref.WeakValueDictionary()


def is_reference(name: str) -> bool:
    """Whether a component name is a reference (``torchvision:resnet18``, ``pkg.module:function``) rather
    than a registered name."""
    return ":" in name


def registry_of(kind: str) -> Registry:
    """The registry of one kind of component (``"model"``, ``"loss"``, ...), from the index."""
    try:
        return _INDEX[kind]
    except KeyError:
        known = sorted(_INDEX)
        hint = did_you_mean(kind, known)
        raise ConfigError(f"no registry of kind '{kind}'{hint}; known: {', '.join(known)}") from None


def registries() -> dict[str, Registry]:
    """Every enrolled registry by kind, in the order they were created."""
    return dict(_INDEX.items())


class Registry(Generic[F]):
    """Names -> functions, for one kind of component (e.g. ``"loss"``); it enrolls itself under its kind.

    ``context`` names keyword arguments that kdtune supplies at build time (e.g. a model's
    ``n_classes`` from the dataset); they are not user parameters.
    """

    def __init__(
        self, kind: str, *, context: tuple[str, ...] = (), references: Callable[[str], Entry] | None = None,
        reference_forms: tuple[tuple[str, str], ...] = (),
    ) -> None:
        if kind in _INDEX:
            raise ValueError(f"a registry of kind '{kind}' exists already; register into it instead")
        self.kind = kind
        self.context = context
        self._entries: dict[str, Entry] = {}
        self._references = references  # name with a ':' -> an entry made on first use (kdtune.model_refs)
        self.reference_forms = reference_forms  # (form, what it names) of the names ``references`` resolves
        self._resolved: dict[str, Entry] = {}
        _INDEX[kind] = self

    def register(
        self,
        name: str,
        *,
        description: str | None = None,
        check: Callable[[dict[str, Any]], None] | None = None,
    ) -> Callable[[F], F]:
        """Decorator adding ``fn`` under ``name``; a duplicate name raises ``ValueError``.

        ``check(params)`` validates relations between parameters (raising ``ConfigError``) at load time.
        """

        def add(fn: F) -> F:
            if name in self._entries and not _same_definition(self._entries[name].fn, fn):
                raise ValueError(f"{self.kind} '{name}' is already registered")
            reserved = RESERVED & set(inspect.signature(fn).parameters)
            if reserved:
                raise ValueError(f"{self.kind} '{name}': a parameter may not be called {sorted(reserved)[0]!r} "
                                 "(a study file reads {name: ..., **params}); rename it")
            doc = description or (inspect.getdoc(fn) or "").split("\n", 1)[0]
            self._entries[name] = Entry(name, fn, doc, _schema_from_signature(name, fn, self.context), check)
            return fn

        return add

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> Entry:
        """The entry for ``name``; an unknown name raises ``ConfigError`` listing the known ones."""
        if name in self._entries:
            return self._entries[name]
        if self._references is not None and is_reference(name):
            if name not in self._resolved:
                self._resolved[name] = self._references(name)
            return self._resolved[name]
        known = ", ".join(self.names())
        refs = "; or a reference such as torchvision:resnet18 or my_project.models:build" if self._references else ""
        raise ConfigError(f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}; known: {known}{refs}")

    def get(self, name: str) -> F:
        return self.entry(name).fn  # type: ignore[return-value]

    def validate(self, name: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` checked and coerced against ``name``'s signature, defaults filled in.

        Raises ``ConfigError`` with the offending parameter and the fix.
        """
        entry = self.entry(name)
        try:
            model = entry.schema.model_validate(dict(params))
        except pydantic.ValidationError as err:
            raise ConfigError(_param_error(self.kind, name, entry, err)) from None
        params = {k: getattr(model, k) for k in type(model).model_fields}  # validated values, specs kept typed
        params.update(model.model_extra or {})  # a zoo model's keywords, which its constructor checks
        if entry.check is not None:
            entry.check(params)
        return params

    def build(self, name: str, /, **params: Any) -> Any:
        """Call ``name`` with validated keyword parameters (for factories such as models);
        this registry's context arguments pass through unvalidated."""
        context = {k: params.pop(k) for k in self.context if k in params}
        return self.get(name)(**self.validate(name, params), **context)

    def bind(self, name: str, params: Mapping[str, Any]) -> Callable[..., Any]:
        """``fn`` with its keyword parameters validated and bound (for losses, penalties, attacks).

        Keywords given at call time override the bound ones.
        """
        fn, kwargs = self.get(name), self.validate(name, params)

        def bound(*args: Any, **more: Any) -> Any:
            return fn(*args, **{**kwargs, **more})

        bound.__name__ = name
        return bound


def _same_definition(old: Callable[..., Any], new: Callable[..., Any]) -> bool:
    """Whether ``new`` is ``old`` defined again: its module was imported anew (a plugin reloaded)."""
    return (getattr(old, "__module__", None), getattr(old, "__qualname__", None)) == (
        getattr(new, "__module__", None), getattr(new, "__qualname__", None))


def _param_error(kind: str, name: str, entry: Entry, err: pydantic.ValidationError) -> str:
    first = err.errors()[0]
    field_name = ".".join(str(p) for p in first["loc"])
    known = list(entry.schema.model_fields)
    if first["type"] == "extra_forbidden":
        hint = did_you_mean(field_name, known) or f" (known: {', '.join(known) or 'none'})"
        return f"{kind} '{name}': unexpected parameter '{field_name}'{hint}"
    if first["type"] == "missing":
        return f"{kind} '{name}': missing required parameter '{field_name}'"
    return f"{kind} '{name}': parameter '{field_name}': {first['msg']} (got {first.get('input')!r})"
