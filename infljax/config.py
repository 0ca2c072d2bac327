"""The config as a typed schema: every config section is read into the library's dataclasses.

A section of an ml_collections config (``config.scores``, ``config.factors`` ...) is read by
`read` into the dataclass whose fields it mirrors: one key per field, nested sections into
nested dataclass fields, lists into tuples. The dataclasses hold the defaults (a config may
leave a field out) and the checks (their ``__post_init__``); an unknown key, a missing required
field or an invalid value raises a `ValueError` naming the config path. `read_split` reads one
section into several dataclasses at once (``config.factors`` feeds the passes and the plan).

Fields the results do not depend on (batch sizes, groupings: how the work is cut, not what it
computes) are declared with `free`; `recorded` leaves them out of a stage's record, so a run may
resume with other values (on other hardware, say) without a conflict (DESIGN §4).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from ml_collections import ConfigDict, config_dict

from infljax.distributed import MeshArgs, Placement, make_placement

T = TypeVar("T")
_FREE = "infljax_free"  # field metadata: results do not depend on the field


def free(default: Any) -> Any:
    """A dataclass field (with `default`) the results do not depend on: `recorded` leaves it out."""
    return dataclasses.field(default=default, metadata={_FREE: True})


def recorded(args: Any) -> dict:
    """`dataclasses.asdict(args)` without the `free` fields (at every depth): what a stage's
    record keeps of its arguments."""
    out = {}
    for f in dataclasses.fields(args):
        if f.metadata.get(_FREE):
            continue
        value = getattr(args, f.name)
        out[f.name] = recorded(value) if dataclasses.is_dataclass(value) else value
    return out


def section_record(cls: type, section: Mapping | None, where: str) -> dict:
    """What a stage records of ``config.<where>``: the section read as a `cls`, `recorded`.
    Also the upgrade of an older record: one that holds the section as given (as stages wrote
    before they recorded typed arguments) or predates a field reads that field as its default,
    so it matches a run that leaves the field at its default, and no other run."""
    return recorded(read(cls, section, where))


def read(cls: type[T], section: Mapping | None, where: str, **given: Any) -> T:
    """`section` (``config.<where>``; None: absent, every field its default) as a `cls`.

    Every key must be a field of `cls`; `given` sets fields the section does not hold (values
    from elsewhere in the config, e.g. the factors' layers for the scores). Raises ValueError
    naming ``config.<where>`` for an unknown key, a missing required field or a value the
    dataclass refuses."""
    return read_split(section, (cls,), where, **given)[0]


def read_split(section: Mapping | None, classes: tuple[type, ...], where: str, **given: Any):
    """`section` as one instance of each of `classes` (a tuple): each key goes to every class
    with a field of its name, and a key no class has is an error."""
    values = _values(section)
    known = {f.name for cls in classes for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"config.{where} has unknown fields {unknown}; valid: {sorted(known - set(given))}"
        )
    return tuple(_build(cls, values | given, where) for cls in classes)


def _values(section: Mapping | None) -> dict:
    if section is None:
        return {}
    if isinstance(section, ConfigDict):
        return section.to_dict()
    if not isinstance(section, Mapping):
        raise ValueError(f"expected a section (a mapping), got {section!r}")
    return dict(section)


def _build(cls: type[T], values: dict, where: str) -> T:
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = _convert(values[f.name], hints[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"config.{where}.{f.name} is required ({cls.__name__})")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        text = str(error)  # named by where it is in the config, unless the check says so
        raise _named(error, text if text.startswith(where) else f"{where}: {text}") from None


def _named(error: Exception, message: str) -> Exception:
    """`error`'s kind (ValueError, CheckpointError, ...) with `message`."""
    try:
        return type(error)(message)
    except Exception:  # an exception class that takes other arguments
        return ValueError(message)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, hint: Any, where: str) -> Any:
    """`value` as the annotation `hint` asks: nested dataclasses, tuples, floats from ints."""
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in params:
            return None
        kinds = [p for p in params if p is not type(None)]
        return _convert(value, kinds[0], where) if len(kinds) == 1 else value
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else read(hint, value, where)
    if origin is dict:
        item = params[1] if len(params) == 2 else Any
        return {str(k): _convert(v, item, f"{where}.{k}") for k, v in _values(value).items()}
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, tuple | list):
            return value  # the dataclass's own check names what it expects
        item = params[0] if params else Any
        return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


PARAM_DTYPES = ("", "float32", "float64", "bfloat16", "float16")
MATMUL_PRECISIONS = ("default", "high", "highest")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The config's top-level settings beside its sections (`stages` is `infljax.pipeline`'s).

    Attributes:
      overwrite: recompute stages whose directories hold other arguments' outputs.
      param_dtype: the dtype the factors and scores run the model in ("" = as stored;
        "bfloat16" = mixed precision).
      matmul_precision: of float32 matrix products ("highest" = true float32; "default" = the
        backend's fast mode: TF32 on recent NVIDIA GPUs, one bfloat16 pass on TPUs).
    """

    overwrite: bool = False
    param_dtype: str = ""
    matmul_precision: str = "highest"

    def __post_init__(self):
        if self.param_dtype not in PARAM_DTYPES:
            raise ValueError(f"param_dtype={self.param_dtype!r}; valid: {PARAM_DTYPES}")
        if self.matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(
                f"matmul_precision={self.matmul_precision!r}; valid: {MATMUL_PRECISIONS}"
            )


def settings(config: ConfigDict) -> Settings:
    """The top-level fields of `config` (those that are not sections) as `Settings`."""
    names = {f.name for f in dataclasses.fields(Settings)}
    return read(Settings, {k: v for k, v in config.items() if k in names}, "")


def section(config: ConfigDict, *names: str) -> ConfigDict | None:
    """``config.<name>[.<name> ...]``, or None when the config has no such section (`read`
    then gives the defaults)."""
    for name in names:
        if config is None or name not in config:
            return None
        config = config[name]
    return config


def section_of(cls: type, exclude: tuple[str, ...] = (), **values: Any) -> ConfigDict:
    """A config section for `cls`: every field (but `exclude`) at its default unless `values`
    sets it (a dict for a nested dataclass field), so that a config lists only what it changes
    and every field can still be overridden on the command line (``--config.<section>.<f>=``).
    A field whose default is None becomes a placeholder of its type."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in exclude}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; fields: {sorted(fields)}")
    out = {}
    for name, f in fields.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            out[name] = section_of(hint, **values.get(name, {}))
            continue
        if name in values:
            out[name] = values[name]
        elif f.default is not dataclasses.MISSING:
            out[name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[name] = f.default_factory()
        else:
            raise ValueError(f"{cls.__name__}.{name} has no default: give it")
        if out[name] is None:
            kinds = [p for p in typing.get_args(hint) if p is not type(None)]
            out[name] = config_dict.placeholder(kinds[0] if len(kinds) == 1 else object)
    return ConfigDict(out)


def mesh_args(config: ConfigDict) -> MeshArgs:
    """``config.mesh`` (absent: every device on the data axis, parameters replicated)."""
    return read(MeshArgs, section(config, "mesh"), "mesh")


def placement(config: ConfigDict) -> Placement:
    """The mesh and parameter placement ``config.mesh`` asks for, over every device."""
    return make_placement(mesh_args(config))
