"""The queries stage: the demo's study mix, the workdir contract, skip / refuse / overwrite, and
generated completions of a trained demo model recorded with their correctness."""

import dataclasses
import json
from pathlib import Path

import pytest
from ml_collections import ConfigDict

from infljax.checkpoints import StageConflict, is_complete
from infljax.data.tokenization import text_only, train_bpe
from infljax.data.world import WorldArgs, generate_world
from infljax.pipeline import run_stages
from infljax.queries import FamilySpec, build_families, generate_queries, read_queries_jsonl
from infljax.queries.completions import CompletionArgs, generate_completions, grade
from infljax.stages import queries as stage
from infljax.workdir import model_dir, queries_dir, queries_path
from tests.test_configs import load

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.py"
STUDY_TYPES = {"factual", "arithmetic", "slope", "linear", "factual_control", "reasoning_control"}


def demo_config(variant: str = "") -> ConfigDict:
    return load(DEMO).get_config(variant)


def test_the_demo_declares_the_studys_mix_and_it_fits_the_models():
    """Every study family, at most 50 queries (scoring stays cheap), drawable from the demo's
    world, and every query fits the demo models' context with the demo's tokenizer."""
    config = demo_config()
    families = config.queries.families.to_dict()
    assert {f["type"] for f in families.values()} == STUDY_TYPES
    assert sum(f["count"] for f in families.values()) <= 50
    world = generate_world(WorldArgs(**config.world.to_dict()))
    specs = [FamilySpec.from_config(label, f) for label, f in families.items()]
    queries = generate_queries(specs, world, 0)
    tokenizer = train_bpe((d.text for d in world.documents), config.corpus.tokenizer.vocab_size)
    encoder = text_only(tokenizer)
    for query in queries:
        tokens = 1 + sum(len(encoder.encode(t).ids) for t in (query.prompt, query.completion))
        assert tokens <= config.corpus.max_length, (query.id, tokens)


def test_stage_writes_the_contract_file_skips_and_refuses(tmp_path):
    config = demo_config("smoke")
    run_stages(config, tmp_path, only=["world", "queries"])
    written = queries_path(tmp_path)
    assert written.read_bytes() == (queries_dir(tmp_path) / "queries.jsonl").read_bytes()
    assert is_complete(queries_dir(tmp_path))
    queries = read_queries_jsonl(written)
    counts = {label: f.count for label, f in config.queries.families.items()}
    assert len(queries) == sum(counts.values())
    assert all(q.relevant is not None for q in queries if q.family != "reasoning_control")
    stamp = written.stat().st_mtime_ns
    run_stages(config, tmp_path, only=["queries"])  # same arguments: skipped
    assert written.stat().st_mtime_ns == stamp
    config.queries.families.slope.count = 1
    with pytest.raises(StageConflict, match="slope.count: 2 -> 1"):
        run_stages(config, tmp_path, only=["queries"])
    config.overwrite = True
    run_stages(config, tmp_path, only=["queries"])
    assert sum(q.family == "slope" for q in read_queries_jsonl(written)) == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[ConfigDict, Path]:
    """A smoke workdir with one trained model whose context fits the queries."""
    workdir = tmp_path_factory.mktemp("trained")
    config = demo_config("smoke")
    with config.unlocked():
        config.models = ConfigDict({"small": config.models.small})
    config.corpus.max_length = 160  # the smoke tokenizer (vocab 300) spells queries nearly bytewise
    config.queries.completions.mode = "generated"
    config.queries.completions.max_new_tokens = 12
    run_stages(config, workdir, only=["world", "corpus", "pretrain", "queries"])
    return config, workdir


@pytest.mark.slow
def test_generated_completions_are_recorded_with_correctness(trained):
    config, workdir = trained
    queries = read_queries_jsonl(queries_path(workdir))
    counts = {label: f.count for label, f in config.queries.families.items()}
    assert len(queries) == sum(counts.values()) and {q.model for q in queries} == {"small"}
    families = build_families(
        [FamilySpec.from_config(k, v) for k, v in config.queries.families.to_dict().items()]
    )
    by_name = {f.name: f for f in families.values()}
    for query in queries:
        assert isinstance(query.correct, bool)
        if query.generated:  # the model's own text, graded by its family
            result = grade(query, query.completion, by_name)
            assert (query.model_answer, query.correct) == (result.model_answer, result.correct)
        else:  # nothing measurable generated: the template is kept, marked wrong
            assert query.correct is False and query.model_answer is None
    stats = json.loads((queries_dir(workdir) / "stats.json").read_text())
    assert set(stats["accuracy"]["small"]) == {q.family for q in queries}


@pytest.mark.slow
def test_generation_is_deterministic_and_matches_the_stage(trained):
    from infljax.data.tokenization import load_tokenizer
    from infljax.models.io import load_model
    from infljax.workdir import tokenizer_path

    config, workdir = trained
    written = read_queries_jsonl(queries_path(workdir))
    templates = [
        dataclasses.replace(q, completion="x", generated=False, correct=None, model=None)
        for q in written[:4]
    ]
    args = CompletionArgs(**config.queries.completions.to_dict())
    again = generate_completions(
        templates,
        load_model(model_dir(workdir, "small")),
        load_tokenizer(tokenizer_path(workdir)),
        "small",
        args,
        build_families(
            [FamilySpec.from_config(k, v) for k, v in config.queries.families.to_dict().items()]
        ),
    )
    for old, new in zip(written[:4], again, strict=True):
        if old.generated:
            assert (new.completion, new.correct) == (old.completion, old.correct)


def test_a_record_of_the_sections_as_given_stays_up_to_date():
    """Records written before the stage recorded typed arguments held the config sections as
    given (fields left out absent); they read as today's record of the same config."""
    config = demo_config("smoke")
    with config.unlocked():
        config.queries.completions.mode = "generated"
    names = list(config.models)
    today = stage._stage_record(config, True, stage.stage_args(config).completions, names)
    older = {"queries": config.queries.to_dict(), "world": config.world.to_dict()}
    older["models"] = {n: config.models[n].to_dict() for n in names}
    assert older != today and stage._upgrade(older) == today
    assert stage._upgrade(today) == today
