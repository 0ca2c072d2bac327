"""User families: loaded by file path or module path, registered, and errors that say what to
do; the example family in configs/ generates correct queries and its config runs the stage."""

import textwrap
from pathlib import Path

import pytest

from infljax.queries import FamilyError, FamilySpec, family_class, make_family, registered_families
from tests.queries.test_families import mentions_number

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "families_example.py"


def test_a_family_loads_from_a_file_path_and_generates():
    family = make_family(FamilySpec("units", f"{EXAMPLE}:UnitConversion", 3, {"units": ("km",)}))
    queries = family.generate(None, __import__("random").Random(0), 3)
    assert family.name == "unit_conversion" and "unit_conversion" in registered_families()
    for query in queries:
        amount = int(query.prompt.split()[1])
        assert query.answer == str(amount * 1000) and query.steps == ("1000", query.answer)
        assert all(mentions_number(query.completion, int(s)) for s in query.steps)
    assert family_class("unit_conversion") is type(family)


def test_a_family_loads_from_a_module_path(tmp_path, monkeypatch):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "families.py").write_text(
        textwrap.dedent(
            """
            import dataclasses
            from infljax.queries import Family, Query

            @dataclasses.dataclass(frozen=True)
            class Params:
                base: int = 2

            class Doubling(Family):
                name = "doubling_test"
                Params = Params

                def generate(self, world, rng, count):
                    out = []
                    for i in range(count):
                        n = rng.randint(1, 9)
                        answer = str(n * self.params.base)
                        out.append(Query(f"d{i}", self.name, f"Double {n}.", f" The answer is "
                                         f"{answer}.", answer, (answer,)))
                    return out
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    family = make_family(FamilySpec("twice", "mypkg.families:Doubling", 2, {"base": 3}))
    queries = family.generate(None, __import__("random").Random(1), 2)
    assert all(int(q.answer) % 3 == 0 for q in queries) and family.params.base == 3
    assert family.grade(queries[0], f" The answer is {queries[0].answer}.").correct


@pytest.mark.parametrize(
    "type_, message",
    [
        ("no_such_pkg.families:Thing", "cannot import 'no_such_pkg.families'"),
        ("infljax.queries.tasks:NoSuchClass", "has no attribute 'NoSuchClass'"),
        ("infljax.queries.tasks:SOURCES", "is not a query family"),
        ("/no/such/file.py:Thing", "no file"),
        (":Thing", "must look like"),
    ],
)
def test_bad_family_paths_say_what_is_wrong(type_, message):
    with pytest.raises(FamilyError, match=message):
        family_class(type_)


def test_the_example_config_runs_the_queries_stage(tmp_path):
    from infljax.pipeline import run_stages
    from infljax.queries import read_queries_jsonl
    from infljax.workdir import queries_path
    from tests.test_configs import load

    config = load(EXAMPLE).get_config("smoke")
    run_stages(config, tmp_path, only=["world", "queries"])
    queries = read_queries_jsonl(queries_path(tmp_path))
    units = [q for q in queries if q.family == "unit_conversion"]
    assert len(units) == config.queries.families.units.count and units[0].id == "units-000"
    assert {q.family for q in queries} >= {"factual", "slope", "reasoning_control"}
