"""configs/hf.py end to end: a tiny Hugging Face checkpoint and a JSONL corpus through
experiments/run.py (corpus → pretrain = conversion → factors → queries → scores → analysis →
report), as a user runs it; and the corpus checks made before converting."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from infljax.models.convert import CheckpointError
from infljax.models.io import load_model
from infljax.pipeline import run_stages
from tests.models.test_convert import logits

ROOT = Path(__file__).parent.parent.parent
SMOKE = ROOT / "tests" / "fixtures" / "hf" / "smoke"


def smoke_config():
    spec = importlib.util.spec_from_file_location("hf_config", ROOT / "configs" / "hf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("smoke")


@pytest.mark.slow
def test_run_py_studies_a_converted_checkpoint(tmp_path):
    """~20 s on 2 CPU cores, nearly all compilation."""
    checkpoint = Path(shutil.copytree(SMOKE, tmp_path / "checkpoint"))  # not the default path
    workdir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [
        sys.executable,
        "-m",
        "experiments.run",
        "--config=configs/hf.py:smoke",
        f"--config.model.path={checkpoint}",
        f"--config.corpus.path={checkpoint / 'corpus.jsonl'}",
        f"--workdir={workdir}",
    ]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((workdir / "models" / "model" / "args.json").read_text())
    assert record["args"]["checkpoint"] == str(checkpoint) and record["complete"]
    corpus_args = json.loads((workdir / "corpus" / "args.json").read_text())["args"]
    assert corpus_args["corpus"]["tokenizer"]["path"] == str(checkpoint)
    exp = np.load(SMOKE / "expected.npz")
    model = load_model(workdir / "models" / "model")
    assert np.max(np.abs(logits(model, exp["input_ids"]) - exp["logits"])) <= 1e-4
    scores = np.load(workdir / "scores" / "model" / "scores.npy")
    queries = (workdir / "queries.jsonl").read_text().splitlines()
    assert scores.shape == (len(queries), 24) and np.all(np.isfinite(scores))
    assert (workdir / "analysis" / "summary.json").is_file()
    assert (workdir / "report" / "index.html").is_file()


def test_a_corpus_beyond_the_checkpoint_is_refused_before_converting(tmp_path):
    config = smoke_config()
    config.model.path = str(SMOKE.parent / "gpt2")  # vocab 64 ...
    config.corpus.tokenizer.path = str(SMOKE)  # ... but a 288-token tokenizer
    with pytest.raises(CheckpointError, match="has vocab_size 64"):
        run_stages(config, tmp_path, only=["corpus", "pretrain"])
    assert not (tmp_path / "models").exists()
    config.corpus.max_length = 33  # gpt2 fixture: 32 positions
    with pytest.raises(CheckpointError, match="context of .* is 32"):
        run_stages(config, tmp_path / "long", only=["corpus", "pretrain"])
