"""Stage `queries`: the configured query families (and query files) -> ``<workdir>/queries.jsonl``.

``config.queries`` holds `seed`, `families` (label -> ``{"type": ..., "count": ..., **params}``,
see `infljax.queries.registry`) and `completions` (`infljax.queries.CompletionArgs`). Families
read the procedural world from ``<workdir>/world/world.json`` when it exists. With generated
completions every listed model answers every query (one record per model, ``model`` set).

Bookkeeping lives in ``<workdir>/queries/`` (``args.json``, ``queries.jsonl``, ``stats.json``);
the finished file is copied to ``<workdir>/queries.jsonl``, the path later stages read.
"""

from __future__ import annotations

import collections
import dataclasses
import shutil
from pathlib import Path

from absl import logging
from ml_collections import ConfigDict

from infljax.checkpoints import begin_stage, finish_stage
from infljax.config import read, recorded, section, section_record, settings
from infljax.data.corpus import corpus_args
from infljax.data.tokenization import (
    TokenizerInfo,
    load_tokenizer,
    read_tokenizer_info,
    text_only,
)
from infljax.data.world import World, WorldArgs, read_world_json
from infljax.influence.measurement import MeasurementArgs
from infljax.models.io import load_model, read_model_config
from infljax.models.spec import ModelSpec
from infljax.queries import (
    CompletionArgs,
    QueriesArgs,
    Query,
    build_families,
    generate_completions,
    generate_queries,
    write_queries_jsonl,
)
from infljax.queries.knowledge import fact_knowledge
from infljax.workdir import (
    model_dir,
    queries_dir,
    queries_path,
    tokenizer_info_path,
    tokenizer_path,
    world_dir,
    write_json,
)


def stage_args(config: ConfigDict) -> QueriesArgs:
    """``config.queries``, typed."""
    return read(QueriesArgs, config.queries, "queries")


def check(config: ConfigDict) -> None:
    build_families(stage_args(config).specs)


def run(config: ConfigDict, workdir: Path) -> None:
    args = stage_args(config)
    specs, completions = args.specs, args.completions
    names = _model_names(config, completions)
    world = _read_world(workdir)
    out = queries_dir(workdir)
    record = _stage_record(config, world is not None, completions, names)
    inputs = _inputs(workdir, specs, world is not None, completions, names)
    overwrite = settings(config).overwrite
    done = begin_stage(
        out, record, inputs=inputs, overwrite=overwrite, resumes=False, upgrade=_upgrade
    )
    if done and queries_path(workdir).is_file():
        logging.info("queries: up to date in %s", out)
        return
    queries = generate_queries(specs, world, args.seed)
    if completions.mode == "generated":
        queries = _generate(config, workdir, queries, build_families(specs), completions, names)
    write_queries_jsonl(queries, out / "queries.jsonl")
    shutil.copyfile(out / "queries.jsonl", queries_path(workdir))
    stats = query_stats(queries) | {"tokens": _token_lengths(config, workdir, queries, names)}
    if world is not None:
        stats["fact_knowledge"] = _fact_knowledge(config, workdir, world, queries, names)
    write_json(out / "stats.json", stats)
    finish_stage(out)
    logging.info("queries: %d written to %s; %s", len(queries), queries_path(workdir), stats)


def _model_names(config: ConfigDict, completions: CompletionArgs) -> list[str]:
    """The models that answer (generated) or whose context is checked: the listed ones, else
    every model of the config."""
    names = list(completions.models or config.models.keys())
    unknown = [n for n in names if n not in config.models]
    if unknown:
        raise ValueError(
            f"config.queries.completions.models names {unknown}; models: {list(config.models)}"
        )
    return names


def _stage_record(config: ConfigDict, has_world: bool, completions, names) -> dict:
    """What the queries depend on: their section, the world and (generated) the models."""
    world = section_record(WorldArgs, section(config, "world"), "world") if has_world else None
    record = {"queries": recorded(stage_args(config)), "world": world}
    if completions.mode == "generated":
        record["models"] = {name: _model_record(name, config.models[name]) for name in names}
    return record


def _upgrade(saved: dict) -> dict:
    """A record of the sections as given (before the stage recorded typed arguments) as
    today's; today's stay as they are."""
    out = {**saved, "queries": section_record(QueriesArgs, saved["queries"], "queries")}
    if saved.get("world") is not None:
        out["world"] = section_record(WorldArgs, saved["world"], "world")
    if "models" in saved:
        out["models"] = {name: _model_record(name, s) for name, s in saved["models"].items()}
    return out


def _model_record(name: str, spec) -> dict:
    return section_record(ModelSpec, spec, f"models.{name}")


def _inputs(workdir: Path, specs, has_world: bool, completions, names) -> dict[str, Path]:
    """What the queries are read from: the world, the answering models, the families' files
    (a `jsonl` family's `path`, a family class loaded from 'file.py:Class')."""
    found = {"world": world_dir(workdir)} if has_world else {}
    if completions.mode == "generated":
        found |= {f"models/{n}": model_dir(workdir, n) for n in names}
    for spec in specs:
        if isinstance(spec.params.get("path"), str):
            found[f"families.{spec.label}.path"] = Path(spec.params["path"])
        if ".py:" in spec.type:
            found[f"families.{spec.label}.type"] = Path(spec.type.rsplit(":", 1)[0])
    return found


def _read_world(workdir: Path) -> World | None:
    path = world_dir(workdir) / "world.json"
    return read_world_json(path) if path.is_file() else None


def _info(workdir: Path, tokenizer) -> TokenizerInfo:
    return read_tokenizer_info(tokenizer_info_path(workdir), tokenizer)


def _tokenizer_file(config: ConfigDict, workdir: Path) -> Path | None:
    trained = tokenizer_path(workdir)
    if trained.is_file():
        return trained
    given = corpus_args(config.corpus)[1].tokenizer.path
    return Path(given) if given else None


def _generate(config, workdir, queries, families, completions, names) -> list[Query]:
    """Every model in `names` answers every query; records are grouped by model."""
    tokenizer_file = _tokenizer_file(config, workdir)
    if tokenizer_file is None:
        raise FileNotFoundError(
            "queries: generated completions need the models' tokenizer; run the corpus stage "
            "or set config.corpus.tokenizer.path"
        )
    tokenizer = load_tokenizer(tokenizer_file)
    given = section(config, "scores", "measurement")
    measurement = read(MeasurementArgs, given, "scores.measurement")
    template = measurement.chat_template
    format_prompt = (lambda p: template.replace("{prompt}", p)) if template else None
    info = _info(workdir, tokenizer)
    if measurement.add_bos is not None:  # prompts as the scores stage measures them
        info = dataclasses.replace(info, add_bos=measurement.add_bos)
    answered = []
    for name in names:
        directory = model_dir(workdir, name)
        if not (directory / "model.json").is_file():
            raise FileNotFoundError(
                f"queries: no model {name!r} in {directory}; run the pretrain stage first or "
                "name other models in config.queries.completions.models"
            )
        model = load_model(directory)
        answered += generate_completions(
            queries, model, tokenizer, name, completions, families, format_prompt, info
        )
        logging.info("queries: %s answered %s", name, _accuracy(answered, name))
    return answered


def _fact_knowledge(config, workdir, world: World, queries: list[Query], names) -> dict:
    """Per trained model: forced-choice accuracy on the world facts the queries ask, vs chance."""
    tokenizer_file = _tokenizer_file(config, workdir)
    out = {}
    for name in names:
        directory = model_dir(workdir, name)
        if tokenizer_file is None or not (directory / "model.json").is_file():
            continue
        tokenizer = load_tokenizer(tokenizer_file)
        mine = [q for q in queries if q.model in (None, name)]
        known = fact_knowledge(
            load_model(directory), tokenizer, _info(workdir, tokenizer), world, mine
        )
        if known is not None:
            out[name] = dataclasses.asdict(known)
            logging.info("queries: %s knows %s", name, out[name])
    return out


def query_stats(queries: list[Query]) -> dict:
    """Counts per family (and per model), and each model's accuracy per family."""
    per_family = collections.Counter(q.family for q in queries)
    stats: dict = {"queries": len(queries), "families": dict(per_family)}
    models = sorted({q.model for q in queries if q.model is not None})
    if models:
        stats["accuracy"] = {name: _accuracy(queries, name) for name in models}
    return stats


def _accuracy(queries: list[Query], model: str) -> dict[str, float]:
    graded = collections.defaultdict(list)
    for q in queries:
        if q.model == model and q.correct is not None:
            graded[q.family].append(q.correct)
    return {family: sum(flags) / len(flags) for family, flags in sorted(graded.items())}


def _token_lengths(config, workdir, queries, names) -> dict | None:
    """The longest query in tokens (BOS + prompt + completion) next to each model's max_length;
    a warning names the queries a model cannot measure."""
    tokenizer_file = _tokenizer_file(config, workdir)
    if tokenizer_file is None:
        return None
    encoder = text_only(load_tokenizer(tokenizer_file))

    def length(q: Query) -> int:
        ids = encoder.encode_batch([q.prompt, q.completion], add_special_tokens=False)
        return 1 + len(ids[0].ids) + len(ids[1].ids)

    lengths = {(q.id, q.model): length(q) for q in queries}
    report: dict = {"longest": max(lengths.values(), default=0)}
    for name in names:
        if not (model_dir(workdir, name) / "model.json").is_file():
            continue
        limit = read_model_config(model_dir(workdir, name)).max_length
        report[f"{name}_max_length"] = limit
        too_long = sorted(i for (i, m), n in lengths.items() if n > limit and m in (None, name))
        if too_long:
            logging.warning(
                "queries: %d queries are longer than model %s's max_length %d and cannot be "
                "measured as they are: %s",
                len(too_long), name, limit, too_long,
            )  # fmt: skip
    return report
