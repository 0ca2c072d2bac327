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
from infljax.pipeline import ConfigError, run_stages
from tests.models.test_convert import logits

ROOT = Path(__file__).parent.parent.parent
SMOKE = ROOT / "tests" / "fixtures" / "hf" / "smoke"


def smoke_config(variant: str = "smoke"):
    spec = importlib.util.spec_from_file_location("hf_config", ROOT / "configs" / "hf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


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


def _with_checkpoints(weights: dict) -> object:
    """The smoke config with a second model, "early", and the final model's checkpoints."""
    config = smoke_config()
    config.unlock()
    config.models.early = config.models.model.to_dict()
    config.models.model.checkpoints = weights
    config.lock()
    return config


@pytest.mark.slow
def test_multi_checkpoint_scores_are_the_weighted_sum_of_each_checkpoints(tmp_path):
    # configs/hf.py:checkpoints1 -> models.model.checkpoints = {checkpoint_1: w_1, model: w}
    # -> baselines/model/checkpoints/ holds sum_c w_c scores_c. Both checkpoints are the same
    # fixture here (standing in for an intermediate checkpoint of a family), so the sum with
    # weights summing to 1 is EK-FAC's own matrix (one checkpoint == EK-FAC) up to float32
    # rounding of the float64 sum (2 ulp), and each model's scores equal the other's exactly.
    config = smoke_config("checkpoints1,smoke")
    config.model.weight_1, config.model.weight = 0.25, 0.75
    run_stages(config, tmp_path, only=[s for s in config.stages if s not in ("analysis", "report")])
    ekfac = np.load(tmp_path / "scores" / "model" / "scores.npy")
    early = np.load(tmp_path / "scores" / "checkpoint_1" / "scores.npy")
    np.testing.assert_array_equal(early, ekfac)
    out = tmp_path / "baselines" / "model" / "checkpoints"
    combined = np.load(out / "scores.npy")
    expected = (0.25 * early.astype(np.float64) + 0.75 * ekfac.astype(np.float64)).astype(
        np.float32
    )
    np.testing.assert_allclose(combined, expected, rtol=2 * np.finfo(np.float32).eps, atol=0)
    np.testing.assert_allclose(combined, ekfac, rtol=2 * np.finfo(np.float32).eps, atol=0)
    norms = np.load(tmp_path / "scores" / "model" / "doc_grad_norms.npy")
    np.testing.assert_array_equal(np.load(out / "doc_grad_norms.npy"), norms)
    record = json.loads((out / "args.json").read_text())
    assert record["args"]["weights"] == {"checkpoint_1": 0.25, "model": 0.75}
    assert record["complete"]
    assert not (tmp_path / "baselines" / "checkpoint_1" / "checkpoints").exists()


def test_checkpoints_naming_an_unknown_model_are_refused_before_any_stage(tmp_path):
    config = _with_checkpoints({"step1000": 0.5, "model": 0.5})
    with pytest.raises(ConfigError, match=r"names \['step1000'\], not models of this config"):
        run_stages(config, tmp_path, only=["corpus", "baselines"])
    assert not (tmp_path / "corpus").exists()
    with pytest.raises(ConfigError, match="weights must be >= 0"):
        run_stages(_with_checkpoints({"early": -1.0}), tmp_path, only=["baselines"])
