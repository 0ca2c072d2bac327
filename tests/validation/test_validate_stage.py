"""Stage `validate`: which retrainings it plans, their caching and locking, and the smoke run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from infljax.stages import validate
from infljax.validation import counterfactual, lds
from infljax.workdir import baselines_dir, scores_dir, validate_dir

ROOT = Path(__file__).parent.parent.parent


def test_unit_key_names_the_set_of_rows_not_their_order():
    assert validate.unit_key(np.array([5, 1, 3])) == validate.unit_key(np.array([1, 3, 5, 3]))
    assert validate.unit_key(np.array([1, 3])) != validate.unit_key(np.array([1, 4]))


def _record(i: int, family: str, steps=(), control=False) -> dict:
    return {"id": f"{family}-{i}", "family": family, "prompt": "p", "completion": "c",
            "steps": list(steps), "control": control}  # fmt: skip


def test_chosen_queries_are_evenly_spaced_within_each_kind():
    records = [_record(i, "factual") for i in range(5)]
    records += [_record(i, "factual_control", control=True) for i in range(2)]
    records += [_record(i, f, steps=("1",)) for f in ("arithmetic", "slope") for i in range(3)]
    assert validate.chosen_queries(records, 3, 2) == [0, 2, 4, 7, 12]
    assert validate.chosen_queries(records, 0, 1) == [7]
    with pytest.raises(ValueError, match="7 reasoning queries asked, 6 available"):
        validate.chosen_queries(records, 1, 7)


def test_a_claimed_unit_is_skipped_by_a_second_claimant_until_released(tmp_path):
    with validate._claim(tmp_path / "u", block=False) as first:
        assert first
        with validate._claim(tmp_path / "u", block=False) as second:
            assert not second
    with validate._claim(tmp_path / "u", block=False) as again:
        assert again


def test_bad_arguments_are_refused_with_the_valid_choices():
    with pytest.raises(ValueError, match="choose from"):
        validate.ValidateArgs(methods=("ekfac", "trak"))
    with pytest.raises(ValueError, match="num_subsets must be >= 3"):
        validate.ValidateArgs(num_subsets=2)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """experiments/validate.py on configs/validate.py:smoke (~2 min on 2 CPUs)."""
    workdir = tmp_path_factory.mktemp("validate")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, "experiments/validate.py", "--config=configs/validate.py:smoke",
           f"--workdir={workdir}"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def _scores(workdir: Path, method: str) -> np.ndarray:
    d = (
        scores_dir(workdir, "small")
        if method == "ekfac"
        else baselines_dir(workdir, "small", method)
    )
    return np.load(d / "scores.npy")


@pytest.mark.slow
def test_smoke_removes_exactly_each_methods_top_k_and_reports_the_change(smoke):
    summary = json.loads((validate_dir(smoke, "small") / "summary.json").read_text())
    args = summary["args"]
    assert sorted(summary["lds"]) == sorted(args["methods"]) == sorted(validate.METHODS)
    ids, original = summary["queries"], np.asarray(summary["original_nats"])
    train_args = validate.training.TrainArgs(
        **json.loads((smoke / "models" / "small" / "args.json").read_text())["args"]["train"]
    )
    train_rows = counterfactual.trained_rows(len(np.load(smoke / "corpus" / "lengths.npy")),
                                             train_args)  # fmt: skip
    units = validate_dir(smoke, "small") / "units"
    for method in args["methods"]:
        for query, change in summary["counterfactual"][method]["per_query"].items():
            q = ids.index(query)
            top = counterfactual.top_k_rows(_scores(smoke, method)[q], args["k"], train_rows)
            unit = units / validate.unit_key(top)
            np.testing.assert_array_equal(np.load(unit / "excluded.npy"), np.sort(top))
            # Stored rounded to 1e-6 nats; the NLLs themselves are float32 (~1e-6 relative).
            assert change == pytest.approx(np.load(unit / "nats.npy")[q] - original[q], abs=2e-6)
    masks = lds.sample_subsets(len(train_rows), args["num_subsets"], args["fraction"], args["seed"])
    actual = np.stack(
        [np.load(units / validate.unit_key(train_rows[~m]) / "nats.npy") for m in masks], axis=1
    )
    for method in args["methods"]:
        predicted = lds.subset_predictions(_scores(smoke, method)[:, train_rows], masks)
        expected = [None if np.isnan(v) else round(float(v), 6) for v in lds.lds(predicted, actual)]
        assert summary["lds"][method]["per_query"] == expected
    kfac = json.loads((baselines_dir(smoke, "small", "kfac") / "args.json").read_text())
    assert kfac["args"]["args"]["strategy"] == "kfac"
    page = (smoke / "report" / "index.html").read_text()
    assert "Validation: do the scores predict retraining?" in page
    assert page.count("validate_small_") == 0 and "LDS factual" in page  # figures inlined


@pytest.mark.slow
def test_smoke_rerun_reuses_every_retraining(smoke):
    units = sorted((validate_dir(smoke, "small") / "units").glob("*/nats.npy"))
    stamps = [p.stat().st_mtime_ns for p in units]
    record = validate_dir(smoke, "small") / "args.json"  # mark unfinished: the stage reruns
    record.write_text(json.dumps(json.loads(record.read_text()) | {"complete": False}))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, "experiments/validate.py", "--config=configs/validate.py:smoke",
           f"--workdir={smoke}", "--stages=validate"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "left out" not in result.stderr  # no unit was retrained
    assert [p.stat().st_mtime_ns for p in units] == stamps
