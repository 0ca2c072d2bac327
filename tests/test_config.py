"""The typed config schema (infljax.config): sections read into dataclasses, defaults in the
dataclasses, errors that name the config path, free fields left out of records."""

import dataclasses

import pytest
from ml_collections import ConfigDict

from configs.demo import get_config as demo_config
from configs.hf import get_config as hf_config
from infljax.config import (
    free,
    read,
    read_split,
    recorded,
    section,
    section_of,
    section_record,
    settings,
)
from infljax.curvature.fit import factors_section
from infljax.influence.run import ScoresArgs
from infljax.models.spec import model_specs


@dataclasses.dataclass(frozen=True)
class Inner:
    scale: float = 1.0
    flag: bool | None = None

    def __post_init__(self):
        if self.scale < 0:
            raise ValueError(f"scale must be >= 0, got {self.scale}")


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str
    sizes: tuple[int, ...] = (1,)
    inner: Inner = Inner()
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    batch_size: int = free(8)


@dataclasses.dataclass(frozen=True)
class Other:
    seed: int = 0


def test_a_section_is_read_into_its_dataclass_with_the_defaults_for_what_it_leaves_out():
    got = read(Outer, ConfigDict({"name": "a", "sizes": [2, 3], "inner": {"scale": 2}}), "s")
    assert got == Outer("a", (2, 3), Inner(2.0))
    assert isinstance(got.inner.scale, float)  # an int where a float is declared
    assert read(Outer, None, "s", name="b") == Outer("b")  # absent section: the defaults
    weights = read(Outer, {"name": "c", "weights": {"x": 1}}, "s").weights
    assert weights == {"x": 1.0} and isinstance(weights["x"], float)


def test_errors_name_the_config_path():
    with pytest.raises(ValueError, match=r"config\.s has unknown fields \['nmae'\]"):
        read(Outer, {"nmae": "a"}, "s")
    with pytest.raises(ValueError, match=r"config\.s\.name is required"):
        read(Outer, {}, "s")
    with pytest.raises(ValueError, match=r"^s\.inner: scale must be >= 0, got -1\.0$"):
        read(Outer, {"name": "a", "inner": {"scale": -1}}, "s")
    with pytest.raises(ValueError, match=r"config\.s\.inner has unknown fields \['scael'\]"):
        read(Outer, {"name": "a", "inner": {"scael": 1}}, "s")


def test_one_section_split_over_several_dataclasses():
    outer, other = read_split({"name": "a", "seed": 3}, (Outer, Other), "s")
    assert (outer, other) == (Outer("a"), Other(3))
    with pytest.raises(ValueError, match=r"unknown fields \['sed'\]"):
        read_split({"name": "a", "sed": 3}, (Outer, Other), "s")


def test_records_leave_the_free_fields_out():
    assert recorded(Outer("a", batch_size=64)) == recorded(Outer("a", batch_size=1))
    assert recorded(Outer("a")) == {
        "name": "a", "sizes": (1,), "inner": {"scale": 1.0, "flag": None}, "weights": {}
    }  # fmt: skip


def test_a_record_from_before_a_field_existed_reads_as_its_default():
    older = recorded(Other())
    older.pop("seed")  # written before Other had a seed
    assert section_record(Other, older, "s") == recorded(Other())
    assert section_record(Other, older, "s") != recorded(Other(seed=3))
    assert section_record(Other, {"seed": 5}, "s") == {"seed": 5}  # what it holds is kept


def test_a_section_as_given_and_its_typed_record_give_the_same_record():
    given = {"name": "a", "inner": {"scale": 2}}  # fields left out, as old records hold it
    typed = section_record(Outer, given, "s")
    assert typed == recorded(Outer("a", inner=Inner(2.0)))
    assert section_record(Outer, typed, "s") == typed  # today's records stay as they are
    assert section_record(Outer, {**given, "batch_size": 64}, "s") == typed  # free: not kept
    assert section_record(Outer, {**given, "sizes": [3]}, "s") != typed


def test_a_section_from_the_defaults_lists_every_field_for_the_command_line():
    made = section_of(Outer, exclude=("name",), inner={"scale": 3.0}, sizes=(4,))
    assert set(made) == {"sizes", "inner", "weights", "batch_size"}
    made.inner.flag = True  # the None default is a typed placeholder: settable
    assert read(Outer, made, "s", name="x") == Outer("x", (4,), Inner(3.0, True))
    with pytest.raises(ValueError, match="no field"):
        section_of(Outer, exclude=("name",), sizse=(4,))


@pytest.mark.parametrize("config", [demo_config(""), demo_config("smoke"), hf_config("smoke")])
def test_the_shipped_configs_read_into_the_schema(config):
    """Every section a stage reads, typed: the shipped configs are valid schema instances."""
    scores = ScoresArgs.from_config(config)
    _, plan, layers = factors_section(config.factors)
    assert scores.layers == layers.layers == tuple(config.factors.layers)
    assert scores.scoring.batch_size == config.scores.scoring.batch_size
    assert plan.batch_size == config.factors.batch_size
    assert settings(config).matmul_precision == "highest"
    assert set(model_specs(config)) == set(config.models)
    assert section(config, "scores", "measurement") is not None
    assert section(config, "validation", "seed") is None
