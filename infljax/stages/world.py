"""Stage `world`: generate the procedural world (the embedded default's corpus and ground truth).

Writes ``<workdir>/world/world.json`` (facts, instances, documents with ground truth) and
``<workdir>/world/corpus.jsonl`` (the corpus the `corpus` stage reads, like any user corpus).
Skipped when the config names its own corpus (``config.corpus.path``).
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

from absl import logging
from ml_collections import ConfigDict

from infljax.checkpoints import begin_stage, finish_stage
from infljax.config import read, recorded, section, section_record, settings
from infljax.data.corpus import corpus_args
from infljax.data.world import WorldArgs, generate_world, write_corpus_jsonl, write_world_json
from infljax.workdir import world_dir, write_json


def check(config: ConfigDict) -> None:
    """The stage's typed arguments (raises on an invalid value)."""
    read(WorldArgs, section(config, "world"), "world")


def _upgrade(saved: dict) -> dict:
    """A record of the section as given (before the stage recorded typed arguments) as
    today's; today's stays as it is."""
    return {**saved, "world": section_record(WorldArgs, saved["world"], "world")}


def run(config: ConfigDict, workdir: Path) -> None:
    if path := corpus_args(config.corpus)[1].path:
        logging.info("world: skipped (config.corpus.path=%s)", path)
        return
    args = read(WorldArgs, section(config, "world"), "world")
    out = world_dir(workdir)
    overwrite = settings(config).overwrite
    record = {"world": recorded(args)}
    if begin_stage(out, record, overwrite=overwrite, resumes=False, upgrade=_upgrade):
        logging.info("world: up to date in %s", out)
        return
    start = time.perf_counter()
    world = generate_world(args)
    write_world_json(world, out / "world.json")
    write_corpus_jsonl(world, out / "corpus.jsonl")
    sources = collections.Counter(d.source for d in world.documents)
    stats = {
        "documents": len(world.documents),
        "facts": len(world.facts),
        "instances": len(world.instances),
        "sources": dict(sorted(sources.items())),
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_json(out / "stats.json", stats)
    finish_stage(out)
    logging.info("world: %s", stats)
