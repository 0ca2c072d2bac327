"""Stage `scores`: every query against every document, for each model in the config.

Per model, one `infljax.influence.run.ScoringRun` into ``<workdir>/scores/<name>/`` (the files
are listed there and in DESIGN §4); a rerun resumes where the last one stopped.
"""

from __future__ import annotations

from pathlib import Path

from ml_collections import ConfigDict

from infljax.config import mesh_args, placement, settings
from infljax.data.corpus import load_corpus
from infljax.data.tokenization import load_tokenizer
from infljax.influence.run import ModelInputs, ScoresArgs, ScoringRun
from infljax.workdir import corpus_dir, scores_dir, tokenizer_path


def check(config: ConfigDict) -> None:
    """The stage's typed arguments (raises on an invalid value)."""
    ScoresArgs.from_config(config)
    mesh_args(config)


def run(config: ConfigDict, workdir: Path) -> None:
    args, overwrite = ScoresArgs.from_config(config), settings(config).overwrite
    corpus = load_corpus(corpus_dir(workdir))
    tokenizer = load_tokenizer(tokenizer_path(workdir))
    placed = placement(config)
    for name in config.models:
        inputs = ModelInputs.of_workdir(workdir, name, corpus, tokenizer)
        ScoringRun(name, inputs, args, placed, scores_dir(workdir, name), overwrite).run()
