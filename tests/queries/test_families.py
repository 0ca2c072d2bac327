"""The built-in families: determinism, arithmetic checked by independent code, the study's
ranges, controls that contain their answer, ground truth that matches the world, and errors."""

import operator
import re
from fractions import Fraction

import pytest

from infljax.data.world import World
from infljax.queries import (
    FamilyError,
    FamilySpec,
    Query,
    generate_queries,
    make_family,
    registered_families,
)

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_ARITHMETIC = re.compile(r"\((\d+) ([-+*]) (\d+)\) ([-+*]) (\d+)")
_SLOPE = re.compile(r"\((\d+), (\d+)\) and \((\d+), (\d+)\)")
_LINEAR = re.compile(r"(\d+)x \+ (\d+) = (\d+)")
STUDY_MIX = {
    "factual": ("factual", 10, {"topics": ("capital", "mountain", "river", "founder", "founded")}),
    "arithmetic": ("arithmetic", 6, {"variants": ("calculate", "evaluate")}),
    "slope": ("slope", 6, {"variants": ("points", "find")}),
    "linear": ("linear", 6, {"variants": ("solve", "find")}),
    "factual_control": ("factual_control", 5, {}),
    "reasoning_control": ("reasoning_control", 6, {}),
}


def make(mix: dict, world: World | None, seed: int = 0) -> list[Query]:
    specs = [FamilySpec(label, t, n, params) for label, (t, n, params) in mix.items()]
    return generate_queries(specs, world, seed)


def one(type_: str, count: int, world: World | None, seed: int = 0, **params) -> list[Query]:
    return make({type_: (type_, count, params)}, world, seed)


def mentions_number(text: str, value: int) -> bool:
    """`value` is written in `text` as a number (a minus sign attached, not a subtraction)."""
    sign = "-" if value < 0 else ""
    return re.search(rf"(?<![\d-]){sign}{abs(value)}(?!\d)", text) is not None


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_queries_and_other_seed_other_queries(world):
    first, again, other = (
        make(STUDY_MIX, world, 0),
        make(STUDY_MIX, world, 0),
        make(STUDY_MIX, world, 1),
    )
    assert first == again
    assert [q.prompt for q in first] != [q.prompt for q in other]
    assert len(first) == sum(n for _, n, _ in STUDY_MIX.values())


def test_a_family_count_does_not_change_another_familys_queries(world):
    bigger = dict(STUDY_MIX, slope=("slope", 8, {}))
    linear = lambda qs: [q for q in qs if q.family == "linear"]  # noqa: E731
    assert linear(make(STUDY_MIX, world)) == linear(make(bigger, world))


# ----------------------------------------------------------------------------- reasoning


def _solve(query: Query) -> tuple[tuple[int, ...], dict]:
    """(steps, operands) of the query's problem, computed independently from its prompt."""
    if query.task == "arithmetic":
        a, o1, b, o2, c = _ARITHMETIC.search(query.prompt).groups()
        inner = _OPS[o1](int(a), int(b))
        return (inner, _OPS[o2](inner, int(c))), {"operands": (int(a), int(b), int(c))}
    if query.task == "slope":
        x1, y1, x2, y2 = map(int, _SLOPE.search(query.prompt).groups())
        slope = Fraction(y2 - y1, x2 - x1)
        assert slope.denominator == 1, f"{query.id}: fractional slope {slope}"
        return (y2 - y1, x2 - x1, int(slope)), {"operands": (x1, y1, x2, y2)}
    a, b, c = map(int, _LINEAR.search(query.prompt).groups())
    x = Fraction(c - b, a)
    assert x.denominator == 1, f"{query.id}: fractional solution {x}"
    return (c - b, int(x)), {"operands": (a, b, c)}


@pytest.mark.parametrize("source", ["world", "fresh"])
def test_every_answer_and_step_is_the_correct_arithmetic(world, source):
    tasks = ("arithmetic", "slope", "linear")
    mix = {k: (t, n, {**p, "source": source}) for k, (t, n, p) in STUDY_MIX.items() if t in tasks}
    for query in make(mix, world):
        steps, _ = _solve(query)
        assert query.steps == tuple(str(s) for s in steps), query.id
        assert query.answer == str(steps[-1]) and int(query.answer) == steps[-1]
        assert query.task == query.family and not query.control
        for step in steps:
            assert mentions_number(query.completion, step), (query.id, step, query.completion)
        assert query.completion.endswith(f"The answer is {query.answer}.")


def test_the_studys_number_ranges_hold(world):
    queries = make(STUDY_MIX, world) + make(STUDY_MIX, world, seed=3)
    queries += one("arithmetic", 20, None, source="fresh") + one("slope", 20, None, source="fresh")
    queries += one("linear", 20, None, source="fresh")
    for query in (q for q in queries if q.task):
        steps, info = _solve(query)
        operands = info["operands"]
        if query.task == "arithmetic":
            assert all(0 <= v <= 20 for v in operands) and all(s >= 1 for s in steps)
        elif query.task == "slope":
            assert all(0 <= v <= 100 for v in operands) and steps[-1] != 0
        else:
            assert all(0 <= v <= 100 for v in operands) and steps[-1] >= 1


def test_in_corpus_fraction_and_ground_truth_match_the_world(world):
    queries = one("slope", 6, world, in_corpus_fraction=0.5)
    queries += one("linear", 4, world, in_corpus_fraction=1.0)
    text = {d.doc_id: d.text for d in world.documents}
    assert sum(q.in_corpus for q in queries if q.family == "slope") == 3
    assert all(q.in_corpus for q in queries if q.family == "linear")
    for query in queries:
        instance = world.instance(query.instance_id)
        assert query.in_corpus == instance.in_corpus and instance.expression in query.prompt
        rel = query.relevant
        expected_works = [d.doc_id for d in world.documents if query.instance_id in d.works]
        expected_answers = [d.doc_id for d in world.documents if query.instance_id in d.answers]
        assert list(rel.works) == expected_works and list(rel.answers) == expected_answers
        assert bool(rel.works or rel.answers) == query.in_corpus
        for doc_id in rel.answers:  # planted: the problem and its answer
            assert instance.expression in text[doc_id]
            assert mentions_number(text[doc_id], int(query.answer))
        for doc_id in rel.works:  # worked: every step (code may spell the problem otherwise)
            assert all(mentions_number(text[doc_id], int(s)) for s in query.steps), doc_id


def test_held_out_and_fresh_problems_appear_in_no_document(world):
    corpus = "\n".join(d.text for d in world.documents)
    held_out = one("arithmetic", 5, world, in_corpus_fraction=0.0)
    fresh = one("arithmetic", 8, world, source="fresh") + one("slope", 8, world, source="fresh")
    for query in held_out + fresh:
        expression = _ARITHMETIC.search(query.prompt) or _SLOPE.search(query.prompt)
        assert expression.group(0) not in corpus, query.id
        assert query.in_corpus is False and query.relevant.works == query.relevant.answers == ()
    assert all(q.instance_id is None for q in fresh)
    assert {q.instance_id for q in held_out} <= {i.instance_id for i in world.instances}


def test_without_a_world_fresh_problems_have_unknown_ground_truth():
    for query in one("linear", 3, None, source="fresh"):
        assert query.in_corpus is None and query.relevant is None and query.instance_id is None


def test_variants_are_used_in_turn(world):
    queries = one("slope", 4, world, variants=("points", "find"))
    assert [q.variant for q in queries] == ["points", "find", "points", "find"]
    assert queries[0].prompt.startswith("What is the slope of the line passing through the points")
    assert queries[1].prompt.startswith("Find the slope of the line through")
    assert all(q.prompt.endswith("\n\nThink step-by-step.") for q in queries)


def test_the_studys_prompt_formats():
    from infljax.data.world_tasks import make_arithmetic, make_linear, make_slope
    from infljax.queries.tasks import Arithmetic, Linear, Slope

    arithmetic = Arithmetic()._query(None, make_arithmetic(7, 4, 7, ("-", "*")), 0)
    slope = Slope()._query(None, make_slope(94, 62, 95, 19), 0)
    linear = Linear()._query(None, make_linear(8, 16, 32), 0)
    assert arithmetic.prompt == "Calculate the answer: (7 - 4) * 7\n\nThink step-by-step."
    assert slope.prompt == (
        "What is the slope of the line passing through the points (94, 62) and (95, 19)?\n\n"
        "Think step-by-step."
    )
    assert linear.prompt == "Solve for x: 8x + 16 = 32\n\nThink step-by-step."
    assert arithmetic.completion == (
        "\nFirst, evaluate the parentheses: 7 - 4 = 3.\nThen multiply: 3 * 7 = 21.\n"
        "The answer is 21."
    )
    assert (slope.answer, slope.steps) == ("-43", ("-43", "1", "-43"))
    assert (linear.answer, linear.steps) == ("2", ("16", "2"))


# ----------------------------------------------------------------------------- factual


def test_factual_queries_ask_world_facts_without_giving_the_answer(world):
    queries = one("factual", 20, world, variants=("question", "quiz"))
    states = {d.doc_id: d.states for d in world.documents}
    assert {q.variant for q in queries} == {"question", "quiz"}
    for query in queries:
        facts = [world.fact(f) for f in query.fact_ids]
        assert query.answer == facts[0].value and not query.control and not query.task
        assert facts[0].entity in query.prompt
        for fact in facts:
            assert fact.value not in query.prompt and fact.value in query.completion
        if facts[0].attribute == "mountain":
            assert [f.attribute for f in facts] == ["mountain", "mountain_height"]
            assert query.steps == (facts[0].value, facts[1].value)
            assert "how tall" in query.prompt
        else:
            assert len(facts) == 1 and query.steps == ()
        expected = [d for d, s in states.items() if set(s) & set(query.fact_ids)]
        assert list(query.relevant.states) == expected and query.in_corpus


def test_factual_asks_user_pairs_without_a_world():
    pairs = (
        ("What is the capital of France?", "Paris"),
        ("Who wrote Hamlet?", "Shakespeare", " W. Shakespeare."),
    )
    queries = one("factual", 2, None, pairs=pairs)
    assert [(q.prompt, q.answer, q.completion) for q in queries] == [
        ("What is the capital of France?", "Paris", " Paris"),
        ("Who wrote Hamlet?", "Shakespeare", " W. Shakespeare."),
    ]


def test_factual_topics_restrict_the_questions(world):
    queries = one("factual", 10, world, topics=("founded",))
    assert all(world.fact(q.fact_ids[0]).attribute == "founded" for q in queries)


# ----------------------------------------------------------------------------- controls


def test_controls_contain_their_answer_in_the_prompt(world):
    queries = one("factual_control", 10, world) + one("reasoning_control", 12, world)
    for query in queries:
        assert query.control
        for part in (query.answer, *query.steps):
            assert part in query.prompt and part in query.completion, query.id
        if query.family == "reasoning_control":
            assert mentions_number(query.prompt, int(query.answer))


def test_reasoning_controls_are_the_studys_three_kinds(world):
    queries = one("reasoning_control", 9, world)
    assert [q.variant for q in queries] == ["story", "slope", "brackets"] * 3
    story, slope, brackets = queries[:3]
    story_format = r"Find the answer: There are (\d+) (\w+) (.+)\. How many \2 are \3\?\n\n"
    assert re.fullmatch(story_format + r"Think step-by-step\.", story.prompt)
    assert (
        slope.prompt == f"The slope of the line is {slope.answer}. What is the slope of the line?"
    )
    assert brackets.prompt == f"Can you repeat the number between brackets ({brackets.answer})?"
    for query in queries:
        number = int(query.answer)
        assert (
            (number != 0 and abs(number) <= 100) if query.variant == "slope" else 1 <= number <= 100
        )


def test_factual_controls_invent_names_absent_from_the_corpus(world):
    corpus = "\n".join(d.text for d in world.documents).lower()
    entities = {e.name for e in world.entities}
    for query in one("factual_control", 10, world):
        entity = re.search(r"(?:kingdom|republic|island|planet|country) (\w+)", query.prompt)[1]
        assert entity not in entities and entity.lower() not in corpus
        assert query.answer.lower() not in corpus
        assert query.relevant.states == () and query.fact_ids == ()


# ----------------------------------------------------------------------------- errors


def test_unknown_type_lists_the_registered_families():
    with pytest.raises(FamilyError) as error:
        make_family(FamilySpec("x", "slopes", 1))
    for name in (
        "factual",
        "arithmetic",
        "slope",
        "linear",
        "factual_control",
        "reasoning_control",
    ):
        assert name in str(error.value)
    assert "'slopes'" in str(error.value) and "'package.module:Class'" in str(error.value)
    assert set(registered_families()) >= {"factual", "jsonl", "reasoning_control"}


@pytest.mark.parametrize(
    "spec, message",
    [
        (FamilySpec("a", "arithmetic", 1, {"operand_max": 5}), "valid: \\['source'"),
        (FamilySpec("a", "arithmetic", 1, {"source": "web"}), "valid: \\('world', 'fresh'\\)"),
        (FamilySpec("a", "slope", 1, {"variants": ("slanted",)}), "valid: \\('points', 'find'\\)"),
        (FamilySpec("a", "factual", 1, {"topics": ("moon",)}), "topics"),
        (FamilySpec("a", "reasoning_control", 1, {"variants": ("sum",)}), "'story'"),
    ],
)
def test_bad_parameters_say_what_is_valid(spec, message):
    with pytest.raises(FamilyError, match=message):
        make_family(spec)


def test_asking_for_more_than_the_world_has_says_what_to_change(world):
    with pytest.raises(FamilyError, match="world.num_slope"):
        one("slope", 40, world)
    with pytest.raises(FamilyError, match="source='fresh'"):
        one("slope", 2, None)
    with pytest.raises(FamilyError, match="pairs"):
        one("factual", 2, None)
    with pytest.raises(FamilyError, match="no `type`"):
        FamilySpec.from_config("slope", {"count": 2})
