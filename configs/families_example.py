"""A query family of your own, and a config that uses it: the demo plus unit conversions.

    python experiments/run.py --config=configs/families_example.py:smoke \\
        --workdir=/tmp/units --stages=world,queries

A family is a class with a `name`, a frozen `Params` dataclass and ``generate(world, rng,
count)``; subclassing `infljax.queries.Family` supplies the rest (answer grading for generated
completions). A config selects it by ``type='path/to/file.py:Class'`` (as below) or, from an
installed package or a directory on PYTHONPATH, ``type='mypkg.families:UnitConversion'``; its
other fields are the `Params`. Nothing in infljax changes.
"""

# No `from __future__ import annotations` here: config loaders may run this file without
# registering it in sys.modules, and dataclasses need that to resolve string annotations.
import dataclasses
import importlib.util
import random
from pathlib import Path

from ml_collections import ConfigDict

from infljax.queries import Family, Query

VARIANTS = ("", "smoke")
# (larger unit, smaller unit, how many smaller units make one larger)
CONVERSIONS = {"km": ("km", "m", 1000), "kg": ("kg", "g", 1000), "h": ("h", "min", 60)}


@dataclasses.dataclass(frozen=True)
class UnitParams:
    """Attributes:
    units: conversions to ask about (keys of CONVERSIONS), used in turn.
    max_value: amounts are drawn from 2..max_value.
    """

    units: tuple[str, ...] = tuple(CONVERSIONS)
    max_value: int = 20

    def __post_init__(self):
        unknown = [u for u in self.units if u not in CONVERSIONS]
        if isinstance(self.units, str) or not self.units or unknown:
            raise ValueError(f"units must be a non-empty tuple of {tuple(CONVERSIONS)}")
        if not isinstance(self.max_value, int) or self.max_value < 2:
            raise ValueError(f"max_value must be an integer >= 2, got {self.max_value!r}")


class UnitConversion(Family):
    """``Convert 7 km to m.``: the factor, the product, the answer."""

    name = "unit_conversion"
    Params = UnitParams

    def generate(self, world, rng: random.Random, count: int) -> list[Query]:
        del world  # needs no corpus ground truth
        return [self._one(rng, i) for i in range(count)]

    def _one(self, rng: random.Random, index: int) -> Query:
        big, small, factor = CONVERSIONS[self.params.units[index % len(self.params.units)]]
        amount = rng.randint(2, self.params.max_value)
        answer = amount * factor
        return Query(
            id=f"{self.name}-{index:03d}",
            family=self.name,
            prompt=f"Convert {amount} {big} to {small}.\n\nThink step-by-step.",
            completion=(
                f"\nThere are {factor} {small} in 1 {big}.\n"
                f"So {amount} {big} = {amount} * {factor} = {answer} {small}.\n"
                f"The answer is {answer}."
            ),
            answer=str(answer),
            steps=(str(factor), str(answer)),
            task=self.name,
        )


def get_config(arg: str | None = None) -> ConfigDict:
    config = _demo().get_config(arg)
    with config.unlocked():
        config.queries.families.units = ConfigDict(
            {
                "type": f"{Path(__file__).resolve()}:UnitConversion",
                "count": 2 if arg == "smoke" else 4,
                "units": ("km", "kg", "h"),
            }
        )
    return config


def _demo():
    """configs/demo.py (configs/ is not a package, so it is loaded by path)."""
    spec = importlib.util.spec_from_file_location("demo", Path(__file__).with_name("demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
