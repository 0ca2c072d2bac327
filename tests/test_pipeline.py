"""experiments/run.py on configs/demo.py:smoke end to end, then skip and refuse behaviour."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from configs.demo import get_config
from infljax import pipeline

ROOT = Path(__file__).parent.parent


def run(workdir: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [
        sys.executable,
        "experiments/run.py",
        "--config=configs/demo.py:smoke",
        f"--workdir={workdir}",
        *flags,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def smoke_workdir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("smoke")
    result = run(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_smoke_run_writes_every_stage_output(smoke_workdir):
    config = json.loads((smoke_workdir / "config.json").read_text())
    assert (smoke_workdir / "corpus" / "tokens.npy").exists()
    assert (smoke_workdir / "world" / "world.json").exists()
    for name in config["models"]:
        metrics = json.loads((smoke_workdir / "models" / name / "metrics.json").read_text())
        assert metrics["final_held_out_loss"] > 0
        assert (smoke_workdir / "models" / name / "params").is_dir()


def test_rerun_skips_completed_stages(smoke_workdir):
    before = (smoke_workdir / "models" / "small" / "metrics.json").stat().st_mtime_ns
    result = run(smoke_workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "up to date" in result.stderr
    assert (smoke_workdir / "models" / "small" / "metrics.json").stat().st_mtime_ns == before


def test_changed_arguments_are_refused_naming_the_argument(smoke_workdir):
    result = run(smoke_workdir, "--config.corpus.max_length=150", "--stages=corpus")
    assert result.returncode != 0
    assert "corpus.max_length: 160 -> 150" in result.stderr
    assert "overwrite" in result.stderr


def test_a_url_workdir_is_refused_with_how_to_mount_the_bucket():
    result = run("gs://bucket/runs/demo", "--stages=world")
    assert result.returncode != 0
    assert "gcsfuse" in result.stderr and "Traceback" not in result.stderr
    assert not (ROOT / "gs:").exists()  # nothing written to a local directory named gs:


@pytest.mark.parametrize("precision", ["highest", "default"])
def test_stages_run_at_the_configured_matmul_precision(monkeypatch, tmp_path, precision):
    seen = []
    world = pipeline.stage_module("world")
    monkeypatch.setattr(world, "run", lambda config, workdir: seen.append(_precision()))
    config = get_config("smoke")
    config.unlock().matmul_precision = precision
    pipeline.run_stages(config, tmp_path, only=["world"])
    assert seen == [precision]
    assert _precision() is None  # restored after the run


def _precision():
    return jax.config.jax_default_matmul_precision
