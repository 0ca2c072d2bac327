"""The `analysis` and `report` stages: skip, refuse, clear errors, and the launcher."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from infljax.analysis.inputs import AnalysisInputError
from infljax.pipeline import run_stages
from tests.analysis.conftest import ROOT, demo_config
from tests.analysis.synthetic import synthetic_study, write_workdir


def test_rerun_with_the_same_inputs_skips(analysed_workdir):
    before = [(p, p.stat().st_mtime_ns) for p in (analysed_workdir / "analysis").glob("*.json")]
    page = analysed_workdir / "report" / "index.html"
    page_before = page.stat().st_mtime_ns
    run_stages(demo_config(), analysed_workdir, only=["analysis", "report"])
    assert all(p.stat().st_mtime_ns == t for p, t in before)
    assert page.stat().st_mtime_ns == page_before


def test_changed_scores_are_analysed_again(tmp_path):
    workdir = write_workdir(synthetic_study(seed=1), tmp_path)
    config = demo_config()
    with config.unlocked():
        config.analysis.models = ("small",)  # one model: half the figures, no pair
    run_stages(config, workdir, only=["analysis"])
    summary = workdir / "analysis" / "summary.json"
    before = summary.stat().st_mtime_ns
    run_stages(config, workdir, only=["analysis"])
    assert summary.stat().st_mtime_ns == before  # same inputs: skipped
    nats = workdir / "scores" / "small" / "query_nats.npy"
    np.save(nats, np.load(nats) * 2)
    run_stages(config, workdir, only=["analysis"])  # changed in place: recomputed, not stale
    assert summary.stat().st_mtime_ns != before


def test_missing_scores_say_which_stage_to_run(tmp_path):
    workdir = write_workdir(synthetic_study(seed=2), tmp_path)
    shutil.rmtree(workdir / "scores" / "large")
    with pytest.raises(AnalysisInputError, match="run the scores stage for model 'large'"):
        run_stages(demo_config(), workdir, only=["analysis"])


def test_report_before_analysis_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the analysis stage"):
        run_stages(demo_config(), tmp_path, only=["report"])


def test_launcher_runs_on_a_smoke_config(analysed_workdir, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(analysed_workdir, workdir)  # both stages are complete: the launcher skips
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, "experiments/analyze.py", "--config=configs/demo.py:smoke",
           f"--workdir={workdir}"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report: {workdir / 'report' / 'index.html'}" in result.stdout
    assert "up to date" in result.stderr
