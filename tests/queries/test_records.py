"""The query record: exact JSONL round trips, the DESIGN §3 schema, readable errors, query files
alone or mixed with families, and files the measurement and analysis readers accept."""

import dataclasses
import json

import pytest

from infljax.queries import (
    FamilyError,
    FamilySpec,
    Query,
    QueryFileError,
    Relevant,
    generate_queries,
    read_queries_jsonl,
    write_queries_jsonl,
)
from tests.queries.test_families import STUDY_MIX, make


def _generated_like(query: Query) -> Query:
    return dataclasses.replace(
        query, completion=" wrong.", generated=True, correct=False, model_answer="7", model="small"
    )


def test_round_trip_is_exact(world, tmp_path):
    queries = make(STUDY_MIX, world)
    queries += [_generated_like(queries[0]), _generated_like(queries[-1])]
    queries.append(Query("u1", "custom", "Ünïcode? ", "\nyes", extra={"source": "me", "n": [1]}))
    path = tmp_path / "queries.jsonl"
    write_queries_jsonl(queries, path)
    back = read_queries_jsonl(path)
    assert back == queries
    write_queries_jsonl(back, tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_bytes() == path.read_bytes()


def test_records_carry_the_design_fields_and_omit_unset_ones(world, tmp_path):
    queries = make(STUDY_MIX, world)
    write_queries_jsonl(queries, tmp_path / "q.jsonl")
    records = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    design = ("id", "family", "prompt", "completion", "answer", "steps", "control")
    for record in records:
        assert all(k in record for k in design) and isinstance(record["steps"], list)
        assert "model" not in record and "correct" not in record  # template: every model
    slope = next(r for r in records if r["family"] == "slope")
    assert set(slope["relevant"]) == {"states", "answers", "works"}
    assert slope["instance_id"] and slope["task"] == "slope" and slope["generated"] is False


def test_measurement_and_analysis_read_the_file(world, tmp_path):
    from infljax.analysis.inputs import read_queries
    from infljax.influence.measurement import read_query_records

    queries = make(STUDY_MIX, world)
    template, generated = tmp_path / "template.jsonl", tmp_path / "generated.jsonl"
    write_queries_jsonl(queries, template)
    per_model = [
        dataclasses.replace(_generated_like(q), model=m) for m in ("a", "b") for q in queries
    ]
    write_queries_jsonl(per_model, generated)
    assert len(read_query_records(template, model="a")) == len(queries)
    records = read_query_records(generated, model="b")
    assert [r["id"] for r in records] == [q.id for q in queries]
    assert all(r["model"] == "b" and r["correct"] is False for r in records)
    analysed = read_queries(template, model="a")
    assert [r.id for r in analysed] == [q.id for q in queries]
    assert analysed[0].extra["fact_ids"] == list(queries[0].fact_ids)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", ":1: not valid JSON"),
        ('{"id": "a", "family": "f", "prompt": "p"}', "missing fields \\['completion'\\]"),
        ('{"id": "a", "family": "f", "prompt": "p", "completion": "c", "steps": "12"}', "list"),
        ('{"id": "a", "family": "f", "prompt": "p", "completion": "c", "control": 1}', "true"),
        ('{"id": "a", "family": "f", "prompt": 3, "completion": "c"}', "'prompt' must be"),
        ('{"id": "a", "family": "f", "prompt": "p", "completion": "c", "relevant": [1]}', "object"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_malformed_records_name_the_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(QueryFileError, match=message):
        read_queries_jsonl(path)


def test_duplicate_ids_are_refused(tmp_path):
    path = tmp_path / "dup.jsonl"
    write_queries_jsonl([Query("a", "f", "p", "c"), Query("a", "f", "p2", "c2")], path)
    with pytest.raises(QueryFileError, match="duplicate query ids \\['a'\\]"):
        read_queries_jsonl(path)
    with pytest.raises(FileNotFoundError):
        read_queries_jsonl(tmp_path / "missing.jsonl")


def test_a_query_file_alone_or_mixed_with_families(world, tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        '{"id": "m1", "prompt": "2 + 2 =", "completion": " 4", "answer": "4", "note": "x"}\n'
        '{"id": "m2", "family": "sums", "prompt": "3 + 3 =", "completion": " 6"}\n'
    )
    alone = [FamilySpec("mine", "jsonl", 0, {"path": str(path), "family": "mine"})]
    queries = generate_queries(alone, None, seed=0)
    assert [(q.id, q.family) for q in queries] == [("m1", "mine"), ("m2", "sums")]
    assert queries[0].extra == {"note": "x"}
    mixed = [dataclasses.replace(alone[0], count=1), FamilySpec("slope", "slope", 2)]
    queries = generate_queries(mixed, world, seed=0)
    assert [q.id for q in queries] == ["m1", "slope-000", "slope-001"]
    clash = [FamilySpec("m1", "jsonl", 0, {"path": str(path)}), FamilySpec("m", "slope", 2)]
    path.write_text('{"id": "m-000", "prompt": "p", "completion": "c"}\n')
    with pytest.raises(QueryFileError, match="duplicate query ids \\['m-000'\\]"):
        generate_queries(clash, world, seed=0)
    with pytest.raises(FamilyError, match="holds 1"):
        generate_queries([dataclasses.replace(clash[0], count=5)], world, seed=0)


def test_query_validates_itself():
    with pytest.raises(ValueError, match="id"):
        Query("", "f", "p", "c")
    with pytest.raises(TypeError, match="prompt"):
        Query("a", "f", None, "c")
    with pytest.raises(ValueError, match="repeats record fields"):
        Query("a", "f", "p", "c", extra={"model": "x"})
    assert Relevant(("d1",)).to_json() == {"states": ["d1"], "answers": [], "works": []}
