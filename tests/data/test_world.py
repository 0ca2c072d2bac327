"""Tests for infljax.data.world: determinism, honest ground truth, task arithmetic checked by
independent code, held-out instances absent from the corpus, file round trips, validation."""

import contextlib
import dataclasses
import io
import json
import operator
import re
from collections import Counter
from fractions import Fraction

import pytest

from infljax.data.readers import read_corpus
from infljax.data.world import (
    ATTRIBUTES,
    SOURCES,
    TASKS,
    World,
    WorldArgs,
    generate_world,
    read_world_json,
    write_corpus_jsonl,
    write_world_json,
)

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_ARITHMETIC = re.compile(r"\((\d+) ([-+*]) (\d+)\) ([-+*]) (\d+)")
_SLOPE = re.compile(r"\((\d+), (\d+)\) and \((\d+), (\d+)\)")
_LINEAR = re.compile(r"(\d+)x \+ (\d+) = (\d+)")


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(WorldArgs())


def _by_task(world: World, task: str):
    return [i for i in world.instances if i.task == task]


def _listing(world: World, instance_id: str):
    return [d for d in world.documents if instance_id in d.works + d.answers]


# ---------------------------------------------------------------------------- determinism


def test_same_seed_gives_same_world_and_other_seed_differs(world):
    assert generate_world(WorldArgs()) == world
    other = generate_world(WorldArgs(seed=1))
    assert other.facts != world.facts
    assert [d.text for d in other.documents] != [d.text for d in world.documents]


# ---------------------------------------------------------------------------- facts


def test_entities_and_names_are_unique_and_short(world):
    names = [e.name for e in world.entities]
    assert len(set(names)) == len(names) == world.args.num_entities
    values = [f.value for f in world.facts if f.attribute in ("capital", "river", "founder")]
    everything = names + values + [f.value for f in world.facts if f.attribute == "mountain"]
    assert len(set(everything)) == len(everything)
    assert all(4 <= len(name) <= 12 and name.isalpha() for name in everything)


def test_every_entity_has_every_attribute(world):
    pairs = Counter((f.entity, f.attribute) for f in world.facts)
    assert set(pairs) == {(e.name, a) for e in world.entities for a in ATTRIBUTES}
    assert set(pairs.values()) == {1}
    assert len({f.fact_id for f in world.facts}) == len(world.facts)


def test_stating_documents_contain_entity_and_value(world):
    for doc in world.documents:
        for fact_id in doc.states:
            fact = world.fact(fact_id)
            assert fact.entity in doc.text and fact.value in doc.text, (doc, fact)
            assert doc.source in ("wiki", "trivia")


def test_fact_values_appear_only_in_documents_stating_them(world):
    """A value string identifies its fact: no other document contains it by accident."""
    for fact in world.facts:
        containing = {d.doc_id for d in world.documents if fact.value in d.text}
        stating = {d.doc_id for d in world.documents if fact.fact_id in d.states}
        assert containing == stating, fact


def test_each_fact_is_stated_often_enough(world):
    counts = Counter(fact_id for d in world.documents for fact_id in d.states)
    assert set(counts) == {f.fact_id for f in world.facts}
    assert min(counts.values()) >= world.args.fact_docs_per_fact


def test_mountain_name_and_height_are_stated_together(world):
    for doc in world.documents:
        attributes = {world.fact(fact_id).attribute for fact_id in doc.states}
        assert ("mountain" in attributes) == ("mountain_height" in attributes), doc


def test_heights_and_years_are_in_range(world):
    for fact in world.facts:
        if fact.attribute == "mountain_height":
            assert re.fullmatch(r"\d\d,\d\d\d|\d{5}", fact.value)
            assert 10_000 <= int(fact.value.replace(",", "")) <= 29_999
        if fact.attribute == "founded":
            assert 1100 <= int(fact.value) <= 1899
    formats = {"," in f.value for f in world.facts if f.attribute == "mountain_height"}
    assert formats == {True, False}


# ---------------------------------------------------------------------------- instances


def test_arithmetic_instances_verified_independently(world):
    for inst in _by_task(world, "arithmetic"):
        a, op1, b, op2, c = _ARITHMETIC.fullmatch(inst.expression).groups()
        a, b, c = int(a), int(b), int(c)
        inner = _OPS[op1](a, b)
        result = _OPS[op2](inner, c)
        assert all(0 <= n <= 20 for n in (a, b, c))
        assert inner >= 1 and result >= 1
        assert inst.operands == (a, b, c) and inst.operators == (op1, op2)
        assert inst.steps == (str(inner), str(result)) and inst.answer == str(result)
    used = {i.operators for i in _by_task(world, "arithmetic")}
    assert {("-", "*"), ("+", "*")} <= used


def test_slope_instances_verified_independently(world):
    for inst in _by_task(world, "slope"):
        x1, y1, x2, y2 = (int(n) for n in _SLOPE.fullmatch(inst.expression).groups())
        assert all(0 <= n <= 100 for n in (x1, y1, x2, y2)) and x1 != x2
        slope = Fraction(y2 - y1, x2 - x1)
        assert slope.denominator == 1
        assert inst.operands == (x1, y1, x2, y2)
        assert inst.steps == (str(y2 - y1), str(x2 - x1), str(slope.numerator))
        assert inst.answer == str(slope.numerator)
    assert any(int(i.answer) < 0 for i in _by_task(world, "slope"))


def test_linear_instances_verified_independently(world):
    for inst in _by_task(world, "linear"):
        a, b, c = (int(n) for n in _LINEAR.fullmatch(inst.expression).groups())
        assert a >= 1 and all(0 <= n <= 100 for n in (a, b, c))
        x = Fraction(c - b, a)
        assert x.denominator == 1 and x >= 1 and a * x + b == c
        assert inst.operands == (a, b, c)
        assert inst.steps == (str(c - b), str(x.numerator)) and inst.answer == str(x.numerator)
    assert len({i.answer for i in _by_task(world, "linear")}) > 3


def test_instance_counts_ids_and_held_out_share(world):
    args = world.args
    ids = [i.instance_id for i in world.instances]
    assert len(set(ids)) == len(ids)
    assert len(set(i.expression for i in world.instances)) == len(ids)
    for task in TASKS:
        instances = _by_task(world, task)
        assert len(instances) == args.task_count(task)
        held_out = sum(not i.in_corpus for i in instances)
        assert held_out == round(len(instances) * args.held_out_fraction)


# ---------------------------------------------------------------------------- documents


def test_answering_and_working_documents_contain_results(world):
    for doc in world.documents:
        for instance_id in doc.answers:
            assert world.instance(instance_id).answer in doc.text, doc
        for instance_id in doc.works:
            inst = world.instance(instance_id)
            assert all(step in doc.text for step in inst.steps), (doc, inst)
            assert doc.procedure == inst.task


def test_held_out_instances_appear_nowhere(world):
    held_out = [i for i in world.instances if not i.in_corpus]
    assert held_out
    for inst in held_out:
        assert _listing(world, inst.instance_id) == []
        assert not any(inst.expression in d.text for d in world.documents), inst


def test_expressions_appear_only_in_documents_listing_them(world):
    for inst in world.instances:
        listing = {d.doc_id for d in _listing(world, inst.instance_id)}
        quoting = {d.doc_id for d in world.documents if inst.expression in d.text}
        assert quoting <= listing, inst


def test_in_corpus_instances_are_worked_and_some_planted(world):
    args = world.args
    for task in TASKS:
        in_corpus = [i for i in _by_task(world, task) if i.in_corpus]
        assert all(any(i.instance_id in d.works for d in world.documents) for i in in_corpus)
        planted = {a for d in world.documents for a in d.answers if world.instance(a).task == task}
        assert len(planted) == round(len(in_corpus) * args.planted_fraction)


def test_planted_documents_state_answers_without_procedure(world):
    planted = [d for d in world.documents if d.answers]
    assert len(planted) == sum(
        round(sum(i.in_corpus for i in _by_task(world, t)) * 0.5) * 2 for t in TASKS
    )
    for doc in planted:
        assert doc.source in ("trivia", "web") and doc.procedure is None and not doc.works
        assert not doc.states and len(doc.answers) == 1


def test_sources_counts_and_procedure_labels(world):
    args = world.args
    counts = Counter(d.source for d in world.documents)
    assert set(counts) == set(SOURCES)
    for source in ("code", "math", "stackexchange"):
        docs = [d for d in world.documents if d.source == source]
        assert len(docs) == getattr(args, f"{source}_docs")
        assert Counter(d.procedure for d in docs) == {task: len(docs) // 3 for task in TASKS}
        assert 0 < sum(bool(d.works) for d in docs) < len(docs) / 2  # mostly random numbers
    for doc in world.documents:
        if doc.source in ("wiki", "trivia", "web"):
            assert doc.procedure is None and not doc.works
    web = [d for d in world.documents if d.source == "web" and not d.answers]
    assert len(web) == args.web_docs
    names = [e.name for e in world.entities]
    assert any(any(n in d.text for n in names) for d in web)


def test_documents_are_short_and_ids_unique(world):
    ids = [d.doc_id for d in world.documents]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"d\d{5}", i) for i in ids)
    words = [len(d.text.split()) for d in world.documents]
    assert min(words) >= 5 and max(words) <= 80
    assert 15 <= sum(words) / len(words) <= 60


def test_documents_are_shuffled(world):
    sources = [d.source for d in world.documents[:100]]
    assert len(set(sources)) >= 4


def test_templates_vary(world):
    for source in SOURCES:
        openings = {d.text.split()[0] for d in world.documents if d.source == source}
        assert len(openings) >= 3, source


def test_code_documents_print_what_they_claim(world):
    """Run every code document: scripts print the value of their last comment, REPL sessions
    show the value of each expression; a working document's output includes the answer."""
    for doc in world.documents:
        if doc.source == "code":
            run = _check_repl if doc.text.startswith(">>> ") else _check_script
            outputs = run(doc.text)
            if doc.works:
                assert world.instance(doc.works[0]).answer in outputs, doc


def _check_script(text: str) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(text, {})
    printed = out.getvalue().split()[-1]
    comment = text.splitlines()[-1].split("#")[-1]
    assert printed == comment.split()[-1], text
    return [printed.removesuffix(".0")]


def _check_repl(text: str) -> list[str]:
    namespace: dict = {}
    lines = text.splitlines()
    outputs = []
    for i, line in enumerate(lines):
        if line.startswith(">>> ") and "=" in line and "==" not in line:
            exec(line[4:], namespace)
        elif line.startswith(">>> "):
            outputs.append(repr(eval(line[4:], namespace)))
            assert outputs[-1] == lines[i + 1], text
    return outputs


# ---------------------------------------------------------------------------- other sizes


def test_small_world_with_extreme_fractions():
    args = WorldArgs(
        seed=3, num_entities=2, fact_docs_per_fact=1, num_arithmetic=3, num_slope=2,
        num_linear=1, held_out_fraction=1.0, planted_answers_per_instance=0, code_docs=4,
        math_docs=0, stackexchange_docs=2, web_docs=1,
    )  # fmt: skip
    world = generate_world(args)
    assert not any(d.works or d.answers for d in world.documents)
    assert Counter(d.source for d in world.documents)["code"] == 4
    for inst in world.instances:
        assert not any(inst.expression in d.text for d in world.documents)


def test_crowded_world_keeps_held_out_problems_out():
    """Many instances and procedure documents make random problems collide with instances and
    quote their expressions inside longer ones; neither may leak a held-out problem."""
    args = WorldArgs(
        num_entities=2, num_arithmetic=150, num_slope=150, num_linear=150, code_docs=600,
        math_docs=600, stackexchange_docs=600, web_docs=10,
    )  # fmt: skip
    world = generate_world(args)
    for inst in world.instances:
        listing = {d.doc_id for d in _listing(world, inst.instance_id)}
        assert {d.doc_id for d in world.documents if inst.expression in d.text} <= listing
        if not inst.in_corpus and inst.task != "arithmetic":
            # Code calls such as solve(8, 16, 32) or slope(3, 5, 7, 13) name the operands only.
            same_task = [d.text for d in world.documents if d.procedure == inst.task]
            reverse = inst.operands[2:] + inst.operands[:2]  # the same line, other way round
            for operands in (inst.operands, reverse) if inst.task == "slope" else (inst.operands,):
                pattern = re.compile(rf"(?<!\d){', '.join(map(str, operands))}(?!\d)")
                assert not any(pattern.search(text) for text in same_task), inst


def test_everything_in_corpus_when_nothing_held_out():
    world = generate_world(WorldArgs(held_out_fraction=0.0, worked_fraction=1.0, code_docs=60))
    assert all(i.in_corpus for i in world.instances)
    code = [d for d in world.documents if d.source == "code"]
    assert all(d.works for d in code)


# ---------------------------------------------------------------------------- files


def test_corpus_jsonl_has_one_record_per_document(world, tmp_path):
    path = tmp_path / "corpus.jsonl"
    write_corpus_jsonl(world, path)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(world.documents)
    for record, doc in zip(records, world.documents, strict=True):
        assert set(record) == {"id", "source", "text", "states", "answers", "works", "procedure"}
        assert record["id"] == doc.doc_id and record["text"] == doc.text
        assert tuple(record["works"]) == doc.works and record["procedure"] == doc.procedure
    read = read_corpus(path, on_bad="error").records
    assert [r.doc_id for r in read] == [d.doc_id for d in world.documents]
    assert read[0].extra["states"] == list(world.documents[0].states)


def test_world_json_round_trip(world, tmp_path):
    path = tmp_path / "world.json"
    write_world_json(world, path)
    assert read_world_json(path) == world


def test_read_world_json_rejects_other_files(world, tmp_path):
    path = tmp_path / "world.json"
    path.write_text(json.dumps({"facts": []}))
    with pytest.raises(ValueError, match="not a world file"):
        read_world_json(path)
    write_world_json(world, path)
    payload = json.loads(path.read_text())
    del payload["instances"][3]["answer"]
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"instances\[3\]"):
        read_world_json(path)


def test_lookups(world):
    fact = world.facts[7]
    assert world.fact(fact.fact_id) is fact
    assert world.instance(world.instances[5].instance_id) is world.instances[5]
    assert world.document(world.documents[9].doc_id) is world.documents[9]
    with pytest.raises(KeyError, match="nope"):
        world.instance("nope")


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_entities", 0),
        ("fact_docs_per_fact", -1),
        ("num_slope", 2.5),
        ("code_docs", -3),
        ("held_out_fraction", 1.5),
        ("planted_fraction", -0.1),
        ("worked_fraction", "half"),
        ("seed", None),
        ("num_entities", 10_000),
    ],
)
def test_world_args_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        WorldArgs(**{field: value})


def test_world_args_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        WorldArgs().seed = 3
