"""Query families: the protocol, the registry selected by `type`, and user families by path.

A family is a class with a `name`, a frozen `Params` dataclass (validated on construction) and
``generate(world, rng, count) -> list[Query]``; `Family` is a base class that supplies the rest.
A config names families by `type`::

    families = {"slope": {"type": "slope", "count": 6, "in_corpus_fraction": 0.5}}

`type` is a registered name (see `registered_families()`), ``"package.module:Class"`` (imported)
or ``"path/to/file.py:Class"`` (loaded from the file); a class loaded either way is registered
under its `name` too. The other fields are the family's `Params`. Every query a family returns
gets the id ``<label>-<index>`` (the label is the entry's key) unless the family sets
``keep_ids = True`` (queries read from a file keep theirs).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import random
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from infljax.data.world import World
from infljax.queries.grading import Grade, grade_completion
from infljax.queries.records import Query, check_unique_ids

_REGISTRY: dict[str, type] = {}
_BUILTIN_MODULES = ("factual", "tasks", "controls", "files")


class FamilyError(ValueError):
    """A family cannot be found, built or run as configured; the message says what to change."""


@runtime_checkable
class QueryFamily(Protocol):
    """What a query family provides (subclass `Family` to get the defaults)."""

    name: ClassVar[str]
    Params: ClassVar[type]

    def generate(self, world: World | None, rng: random.Random, count: int) -> list[Query]:
        """`count` queries drawn with `rng`; `world` is None when the corpus is not the
        procedural world (families that need it raise FamilyError)."""
        ...

    def grade(self, query: Query, completion: str) -> Grade:
        """The answer a generated `completion` gives to `query`, and whether it is right."""
        ...


@dataclasses.dataclass(frozen=True)
class NoParams:
    """Parameters of a family that has none."""


class Family:
    """Base class of query families: stores validated `params` and grades completions.

    Subclasses set `name`, `Params` and implement `generate`. `answer_pattern` is the regex whose
    group ``answer`` finds a numeric answer in a generated completion (see `grading`); a family
    whose answers are text sets it to None.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    answer_pattern: ClassVar[str | None] = r"answer is:?\s*(?P<answer>{number})"
    keep_ids: ClassVar[bool] = False

    def __init__(self, params: Any = None):
        self.params = self.Params() if params is None else params

    def generate(self, world: World | None, rng: random.Random, count: int) -> list[Query]:
        raise NotImplementedError(f"{type(self).__name__}.generate")

    def grade(self, query: Query, completion: str) -> Grade:
        return grade_completion(query, completion, self.answer_pattern)


def register(cls: type) -> type:
    """Class decorator: make `cls` selectable as ``type=cls.name``."""
    _check_family_class(cls, cls.__qualname__)
    existing = _REGISTRY.get(cls.name)
    if existing is not None and _class_path(existing) != _class_path(cls):
        raise FamilyError(
            f"query family name {cls.name!r} is taken by {_class_path(existing)}; give "
            f"{_class_path(cls)} another `name`"
        )
    _REGISTRY[cls.name] = cls
    return cls


def registered_families() -> list[str]:
    """Names of every registered family (the built-ins and any loaded since)."""
    _load_builtin()
    return sorted(_REGISTRY)


def family_class(type_: str) -> type:
    """The family class a config's `type` names (see the module docstring)."""
    if not isinstance(type_, str) or not type_:
        raise FamilyError(f"a query family needs a `type`, got {type_!r}")
    if ":" in type_:
        return register(_load_external(type_))
    names = registered_families()
    if type_ not in _REGISTRY:
        raise FamilyError(
            f"unknown query family type {type_!r}; registered: {', '.join(names)}. A family of "
            "your own is named 'package.module:Class' or 'path/to/file.py:Class'"
        )
    return _REGISTRY[type_]


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"infljax.queries.{module}")


def _load_external(type_: str) -> type:
    where, _, attr = type_.rpartition(":")
    if not where or not attr:
        raise FamilyError(f"family type {type_!r} must look like 'module:Class' or 'file.py:Class'")
    module = _load_file(where, type_) if where.endswith(".py") else _import(where, type_)
    cls = getattr(module, attr, None)
    if cls is None:
        raise FamilyError(f"family type {type_!r}: {where} has no attribute {attr!r}")
    _check_family_class(cls, type_)
    return cls


def _import(module: str, type_: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise FamilyError(
            f"family type {type_!r}: cannot import {module!r} ({e}); install the package or "
            "put its directory on PYTHONPATH, or name the file: 'path/to/file.py:Class'"
        ) from e


def _load_file(path: str, type_: str):
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise FamilyError(f"family type {type_!r}: no file {str(file)!r}")
    name = f"infljax_user_families.{file.stem}_{abs(hash(str(file))):x}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    return module


def _check_family_class(cls: Any, where: str) -> None:
    missing = [a for a in ("name", "Params", "generate", "grade") if not hasattr(cls, a)]
    if not isinstance(cls, type) or missing:
        raise FamilyError(
            f"{where} is not a query family: it lacks {missing or ['a class']} (subclass "
            "infljax.queries.Family and set `name` and `Params`)"
        )
    if not isinstance(cls.name, str) or not cls.name:
        raise FamilyError(f"{where}: a query family needs a non-empty string `name`")
    if not dataclasses.is_dataclass(cls.Params):
        raise FamilyError(f"{where}: `Params` must be a (frozen) dataclass")


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


# ----------------------------------------------------------------------------- specs


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """One configured family: its `label` (id prefix), `type`, `count` and parameters."""

    label: str
    type: str
    count: int
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.label, str) or not self.label:
            raise FamilyError(f"a family label must be a non-empty string, got {self.label!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise FamilyError(f"families.{self.label}.count must be an integer >= 0")

    @classmethod
    def from_config(cls, label: str, section: Mapping[str, Any]) -> FamilySpec:
        """``{"type": ..., "count": ..., **params}`` (a config entry) -> FamilySpec."""
        params = dict(section)
        if "type" not in params:
            names = ", ".join(registered_families())
            raise FamilyError(f"families.{label} has no `type`; registered: {names}")
        return cls(label, params.pop("type"), params.pop("count", 0), params)


def make_family(spec: FamilySpec) -> QueryFamily:
    """The family `spec` configures, with its `Params` built (and so validated)."""
    cls = family_class(spec.type)
    valid = [f.name for f in dataclasses.fields(cls.Params)]
    unknown = sorted(set(spec.params) - set(valid))
    if unknown:
        raise FamilyError(
            f"families.{spec.label} (type {spec.type!r}): unknown parameters {unknown}; "
            f"valid: {valid or 'none'}"
        )
    try:
        params = cls.Params(**{k: _tuples(v) for k, v in spec.params.items()})
    except (TypeError, ValueError) as e:
        raise FamilyError(f"families.{spec.label} (type {spec.type!r}): {e}") from e
    return cls(params)


def _tuples(value: Any) -> Any:
    """Config and JSON lists -> tuples (hashable, as frozen parameters need)."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


def generate_queries(specs: Sequence[FamilySpec], world: World | None, seed: int) -> list[Query]:
    """Every configured family's queries, in order. Family ``L`` draws with
    ``random.Random(f"{seed}:{L}")``, so one family's count never changes another's queries.

    Raises:
      FamilyError: a family cannot be built or run as configured.
      QueryFileError: two queries share an id.
    """
    queries: list[Query] = []
    for spec, family in zip(specs, build_families(specs).values(), strict=True):
        keep_ids = getattr(family, "keep_ids", False)
        if spec.count == 0 and not keep_ids:
            continue
        made = family.generate(world, random.Random(f"{seed}:{spec.label}"), spec.count)
        if not keep_ids and len(made) != spec.count:
            raise FamilyError(f"family {spec.label!r} made {len(made)} queries, not {spec.count}")
        if not keep_ids:
            width = max(3, len(str(len(made) - 1)))
            made = [
                dataclasses.replace(q, id=f"{spec.label}-{i:0{width}d}") for i, q in enumerate(made)
            ]
        queries.extend(made)
    check_unique_ids(queries, "the configured query families")
    return queries


def build_families(specs: Sequence[FamilySpec]) -> dict[str, QueryFamily]:
    """label -> family, in the given order (labels must be distinct)."""
    labels = [spec.label for spec in specs]
    if len(set(labels)) != len(labels):
        raise FamilyError(f"family labels must be distinct, got {labels}")
    return {spec.label: make_family(spec) for spec in specs}
