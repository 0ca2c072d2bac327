"""Validation: its arguments and chunk locking (`infljax.validation.run`), and the validate
stage's smoke run end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from infljax import training
from infljax.config import recorded
from infljax.stages import validate
from infljax.validation import lds, methods
from infljax.validation.run import (
    TRAINING_AWARE,
    UNITLESS,
    ValidateArgs,
    chosen_rows,
    claim,
    single_folder,
)
from infljax.workdir import baselines_dir, retrainings_dir, scores_dir, validate_dir

ROOT = Path(__file__).parent.parent.parent


def test_chosen_rows_are_evenly_spaced_over_the_queries():
    np.testing.assert_array_equal(chosen_rows(3, 10), [0, 4, 9])
    np.testing.assert_array_equal(chosen_rows(20, 4), [0, 1, 2, 3])
    assert len(chosen_rows(0, 4)) == 0


def test_a_claimed_chunk_is_skipped_by_a_second_claimant_until_released(tmp_path):
    with claim(tmp_path / "c.npy", block=False) as first:
        assert first
        with claim(tmp_path / "c.npy", block=False) as second:
            assert not second
    with claim(tmp_path / "c.npy", block=False) as again:
        assert again


def test_bad_arguments_are_refused_with_the_valid_choices():
    with pytest.raises(ValueError, match="choose from"):
        ValidateArgs(methods=("ekfac", "trak"))
    with pytest.raises(ValueError, match="num_subsets must be >= 3"):
        ValidateArgs(num_subsets=2)
    with pytest.raises(ValueError, match="ensemble must be >= 0"):
        ValidateArgs(ensemble=-1)
    with pytest.raises(ValueError, match=r"single_model_scales must be .* in \(0, 1\]"):
        ValidateArgs(single_model_scales=(0.1, 1.5))


def test_grouping_of_retrainings_is_not_part_of_the_record():
    a = recorded(ValidateArgs(models_per_call=2, metagradient_chunk=1))
    assert a == recorded(ValidateArgs(models_per_call=16))


def test_a_record_from_before_fixed_init_matches_the_default():
    older = recorded(ValidateArgs())
    older.pop("fixed_init")
    upgraded = validate._upgrade({"validation": older})
    assert upgraded == {"validation": recorded(ValidateArgs())}
    assert upgraded != {"validation": recorded(ValidateArgs(fixed_init=True))}


def _run(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, "experiments/validate.py", "--config=configs/validate.py:smoke",
           f"--workdir={workdir}", *extra]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """experiments/validate.py on configs/validate.py:smoke (a few minutes on 2 CPUs)."""
    workdir = tmp_path_factory.mktemp("validate")
    result = _run(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def _scores(workdir: Path, method: str) -> np.ndarray:
    d = scores_dir(workdir, "small")
    return np.load(
        (d if method == "ekfac" else baselines_dir(workdir, "small", method)) / "scores.npy"
    )


@pytest.mark.slow
def test_smoke_lds_is_recomputed_from_the_stored_retrainings(smoke):
    out = validate_dir(smoke, "small")
    summary = json.loads((out / "summary.json").read_text())
    args = summary["args"]
    assert summary["methods"] == [*args["methods"], *TRAINING_AWARE]
    record = json.loads((smoke / "models" / "small" / "args.json").read_text())["args"]
    train_args = training.TrainArgs(**record["train"])
    n = len(np.load(smoke / "corpus" / "lengths.npy"))
    train_rows = training.split_rows(n, train_args.held_out_fraction, train_args.seed)[0]
    masks = lds.sample_subsets(len(train_rows), args["num_subsets"], args["fraction"], args["seed"])
    folders = {k: smoke / v for k, v in summary["retraining"]["folders"].items()}
    chunks = sorted(folders["runs"].glob("chunk_*.npy"))
    nats = np.concatenate([np.load(c) for c in chunks])  # [M * S, Q], seeds innermost
    measured = nats.reshape(args["num_subsets"], args["seeds"], -1).transpose(2, 0, 1)
    for method in args["methods"]:
        predicted = lds.subset_predictions(_scores(smoke, method)[:, train_rows], masks)
        expected = lds.seed_mean_lds(predicted, measured)
        got = np.array([np.nan if v is None else v for v in summary["lds"][method]["per_query"]])
        np.testing.assert_allclose(got, expected, atol=1e-6)  # stored rounded to 1e-6
        entry = summary["lds"][method]["all"]
        assert entry["low"] <= entry["mean"] <= entry["high"]
    # training-aware methods: the stored matrices, combined as documented
    steps = [int(round(train_args.steps * (i + 1) / args["checkpoints"])) for i in range(2)]
    seed0 = [np.load(out / "methods" / f"ekfac_seed0_step{t}.npy") for t in steps]
    weights = methods.checkpoint_weights(train_args, steps)
    assert weights.sum() == pytest.approx(1.0)
    meta = np.load(folders["metagradient"] / "metagradient.npy")
    assert np.isfinite(meta).all(axis=1).sum() == args["metagradient_queries"]
    assert summary["metagradient_queries"] == [
        summary["queries"][q] for q in np.flatnonzero(np.isfinite(meta[:, 0]))
    ]
    assert len(seed0) == 2 and "ceiling" in summary
    single = args["single_model_subsets"]
    scales = args["single_model_scales"]
    assert len(scales) > 1 and max(scales) == 1.0  # the smoke run draws the linearity curve
    assert summary["retraining"]["count"] == (
        args["num_subsets"] * args["seeds"] + single * len(scales)
    )
    # the single-model protocol: retrained from the original seed alone
    single_masks = lds.sample_subsets(
        len(train_rows), single, args["single_model_fraction"], args["seed"] + 1
    )
    alone = np.concatenate(
        [np.load(c) for c in sorted(folders["single_model"].glob("chunk_*.npy"))]
    )
    for method in args["methods"]:
        predicted = lds.subset_predictions(_scores(smoke, method)[:, train_rows], single_masks)
        expected = lds.seed_mean_lds(predicted, alone.T[:, :, None])
        got = summary["lds"][method]["single_model"]["per_query"]
        got = np.array([np.nan if v is None else v for v in got])
        np.testing.assert_allclose(got, expected, atol=1e-6)
        # the linearity curve: the same subsets with the dropped weights lowered by t
        for point, t in zip(summary["lds"][method]["linearity"], scales, strict=True):
            chunks = sorted(folders[single_folder(t)].glob("chunk_*.npy"))
            scaled = np.concatenate([np.load(c) for c in chunks]).T  # [Q, M]
            defined = np.isfinite(_scores(smoke, method)[:, 0])
            slope = np.median(lds.slopes(t * predicted, scaled)[defined])
            assert point["scale"] == t
            if method in UNITLESS:  # scores not in nats: no slope
                assert point["slope"] is None
            else:
                assert point["slope"] == pytest.approx(slope, abs=1e-6)
            if t == 1:
                np.testing.assert_array_equal(scaled, alone.T)
            else:  # a lowered weight is not a removal
                assert not np.allclose(scaled, alone.T)
    assert (out / "linearity.png").is_file()
    page = (smoke / "report" / "index.html").read_text()
    assert "Validation: do the scores predict retraining?" in page and "ceiling" in page
    assert page.count("validate_small_") == 0  # figures inlined


def _retrainings(workdir: Path) -> list[Path]:
    return sorted(p for p in retrainings_dir(workdir, "small").rglob("*.npy"))


@pytest.mark.slow
def test_smoke_rerun_reuses_every_retraining(smoke):
    out = validate_dir(smoke, "small")
    files = [*_retrainings(smoke), *sorted((out / "methods").glob("*.npy"))]
    kinds = {p.parent.name.rsplit("_", 1)[0] for p in _retrainings(smoke)}
    assert kinds == {"runs", "single_model", "single_model_scale0.1", "metagradient"}
    stamps = [p.stat().st_mtime_ns for p in files]
    record = out / "args.json"  # mark unfinished: the stage reruns
    record.write_text(json.dumps(json.loads(record.read_text()) | {"complete": False}))
    result = _run(smoke, "--stages=validate")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "full-data models" not in result.stderr
    assert [p.stat().st_mtime_ns for p in files] == stamps


@pytest.mark.slow
def test_recomputed_validation_keeps_the_retrainings(smoke):
    # A changed input (rescoring, another damping, a new baseline) or overwrite recomputes the
    # validate stage; the retrainings depend on none of that and are read back, not redone.
    files = _retrainings(smoke)
    stamps = [p.stat().st_mtime_ns for p in files]
    before = json.loads((validate_dir(smoke, "small") / "summary.json").read_text())
    result = _run(smoke, "--stages=validate", "--config.overwrite=True")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _retrainings(smoke) == files
    assert [p.stat().st_mtime_ns for p in files] == stamps
    after = json.loads((validate_dir(smoke, "small") / "summary.json").read_text())
    assert after["lds"] == before["lds"] and after["ceiling"] == before["ceiling"]


_IN_MEMORY = """
import sys
from pathlib import Path
import numpy as np
from configs.validate import get_config
from infljax.data.corpus import load_corpus
from infljax.distributed import MeshArgs, make_placement
from infljax.influence.measurement import read_query_records
from infljax.influence.model_scores import influence_scores
from infljax.models.io import load_model
from infljax.stages import validate
smoke, config = Path(sys.argv[1]), get_config("smoke")
records = read_query_records(smoke / "scores" / "small" / "queries.jsonl")
corpus = load_corpus(smoke / "corpus")
tokens = validate._encode(smoke, config, records, corpus.max_length)
placement = make_placement(MeshArgs(**config.mesh.to_dict()))
scores = influence_scores(load_model(smoke / "models" / "small"), corpus, tokens,
                          validate._influence_args(config), placement)
np.save(sys.argv[2], scores)
"""


@pytest.mark.slow
def test_in_memory_influence_scores_equal_the_factors_and_scores_stages(smoke, tmp_path):
    # influence.model_scores (used for the seed and checkpoint models) is the stages' pipeline
    # in one call: on the pretrained model it gives the scores stage's matrix up to float32
    # summation order (the stages fit in partitions), and the Retrainer's seed-0 full-data run
    # reproduces the pretrained model (scan vs the pretrain loop): 1e-5 of the largest score.
    # Run as the stages ran, in float32 (under this suite's x64 the sampled labels differ).
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = tmp_path / "scores.npy"
    cmd = [sys.executable, "-c", _IN_MEMORY, str(smoke), str(out)]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = _scores(smoke, "ekfac")
    scale = np.abs(expected).max()
    np.testing.assert_allclose(np.load(out), expected, rtol=0, atol=1e-5 * scale)
    retrained = validate_dir(smoke, "small") / "methods" / "ekfac_seed0_step20.npy"
    np.testing.assert_allclose(np.load(retrained), expected, rtol=0, atol=1e-5 * scale)
