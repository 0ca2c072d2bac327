"""Multi-process runs (DESIGN §7) on one machine: 2 processes × 4 CPU devices with gloo
collectives over 127.0.0.1 against 1 process × 8 devices, and the one-process reductions.

Tolerance (float64: the test config runs factors and scores in float64): 1e-10 relative (norm of
the difference over the norm), the suite's invariance tolerance. Both runs split every batch over
8 devices the same way; only the order of the cross-device sums differs (gloo's all-reduce across
processes vs XLA's within one), which moves statistics by ~1e-16 and scores by ~1e-14 relative.
Eigenvectors are compared through the factors they span (Q diag(eigvals) Qᵀ): a single one moves
by ~eps·‖A‖/gap under a one-ulp change of A, and this model has eigenvalue gaps down to 1e-10,
so comparing them entry by entry would measure LAPACK's conditioning, not the run. Files stored
in float32 (scores.npy, per_layer.npy) are compared at 1e-6, float32's rounding. A lost, doubled
or misplaced row, or a process that used another's values, moves the results by ≥ 1e-3.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from infljax.checkpoints import is_complete
from infljax.curvature import load_factors
from infljax.data.batches import row_batches
from infljax.data.corpus import read_rows
from infljax.distributed import (
    data_sharding,
    fingerprint,
    global_batch,
    make_mesh,
    process_rows,
    put,
    replicated,
    to_host,
)
from infljax.models.io import load_model
from infljax.multihost import ProcessArgs, detect_cluster, initialize, on_main
from infljax.pipeline import run_stages
from infljax.workdir import baselines_dir, factors_dir, model_dir, scores_dir

from .multihost_config import get_config
from .tiny import random_corpus

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-10
RTOL_FLOAT32 = 1e-6
RTOL_TRAINED = 1e-5  # 10 float32 Adam steps; see test_two_processes_train_the_model_...
MODEL = "small"
STAGES = ("queries", "factors", "scores", "baselines")  # baselines: tfidf, random
SLURM = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_PROCID": "0"}
TIMEOUT_S = 240  # a hang fails the test (and is killed) instead of stalling the suite


def close(x, y, rtol=RTOL) -> bool:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return bool(np.linalg.norm(x - y) <= rtol * max(np.linalg.norm(y), 1e-300))


# ----------------------------------------------------------------------------- one process


def test_without_a_cluster_a_run_is_one_process(monkeypatch):
    for name in (*SLURM, "SLURM_NTASKS", "OMPI_MCA_orte_hnp_uri"):
        monkeypatch.delenv(name, raising=False)
    if detect_cluster() == "tpu":
        pytest.skip("running on a Cloud TPU VM")
    assert detect_cluster() is None
    assert initialize(ProcessArgs()) == "single"  # returns at once: no coordinator is sought
    assert on_main(divmod, 7, 2) == (3, 1)


def test_a_multi_task_slurm_job_is_detected_a_single_task_one_is_not(monkeypatch):
    for name, value in SLURM.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert detect_cluster() == "slurm"
    monkeypatch.setenv("SLURM_NTASKS", "1")  # JAX would pin such a process to a single GPU
    assert detect_cluster() != "slurm"


def test_process_args_are_checked():
    with pytest.raises(ValueError, match="process_id=2"):
        ProcessArgs(num_processes=2, process_id=2)
    with pytest.raises(ValueError, match="timeouts"):
        ProcessArgs(heartbeat_timeout=0)
    assert ProcessArgs(coordinator_address="10.0.0.1:1234").explicit
    assert not ProcessArgs().explicit


def test_the_replication_check_fingerprint_sees_one_ulp_and_a_transpose():
    """`put` compares these fingerprints of every process's host values (instead of hashing
    them: ~0.3 s per GiB): equal arrays agree, a one-ulp change, a transpose or a moved last
    byte do not."""
    x = np.random.default_rng(0).standard_normal((64, 48))
    nudged = x.copy()
    nudged[5, 7] = np.nextafter(nudged[5, 7], 1.0)
    odd = np.arange(13, dtype=np.uint8)
    assert (fingerprint(x) == fingerprint(x.copy())).all()
    for other, ref in ((nudged, x), (x.T, x), (odd[::-1], odd)):
        assert not (fingerprint(other) == fingerprint(ref)).all()


def test_with_one_process_batches_and_results_are_placed_as_before():
    mesh = make_mesh()
    batch = {"x": np.arange(32.0).reshape(16, 2), "n": np.arange(16, dtype=np.int32)}
    assert process_rows(16, mesh) == slice(0, 16)
    placed, before = global_batch(batch, mesh), jax.device_put(batch, data_sharding(mesh))
    for name in batch:
        assert placed[name].sharding == before[name].sharding
        np.testing.assert_array_equal(to_host(placed)[name], batch[name])
    copies = put(batch, replicated(mesh))
    assert copies["x"].sharding == replicated(mesh)
    assert put(copies, replicated(mesh))["x"] is copies["x"]  # in place: kept


def test_each_process_reads_only_its_rows_of_every_batch():
    corpus = random_corpus(n=10)
    full = list(row_batches(corpus, np.arange(10), 8))
    mine = list(row_batches(corpus, np.arange(10), 8, local=slice(4, 8)))
    assert len(mine) == len(full) == 2
    for whole, part in zip(full, mine, strict=True):
        jax.tree.map(lambda w, p: np.testing.assert_array_equal(np.asarray(w)[4:8], p), whole, part)
    tokens, lengths = read_rows(corpus, np.array([3, -1]))
    np.testing.assert_array_equal(tokens[0], corpus.tokens[3])
    assert lengths[1] == 0 and np.all(tokens[1] == corpus.pad_id)


# ----------------------------------------------------------------------------- two processes


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A workdir with the world, corpus and trained model (queries, factors, scores to come)."""
    workdir = tmp_path_factory.mktemp("multihost") / "prepared"
    run_stages(get_config(), workdir, only=["world", "corpus", "pretrain"])
    return workdir


def _copy(prepared: Path, name: str) -> Path:
    return Path(shutil.copytree(prepared, prepared.parent / name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(
    workdir: Path, stages, script="experiments/run.py", extra=(), meanwhile=lambda: None
) -> list:
    """Run 2 processes × 4 CPU devices on `workdir` (and `meanwhile()` here while they run);
    [(returncode, output)] per process."""
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        JAX_ENABLE_X64="1",
        JAX_PLATFORMS="cpu",
        TOKENIZERS_PARALLELISM="false",
    )
    port = _free_port()
    procs, logs = [], []
    for i in range(2):
        log = open(workdir.parent / f"{workdir.name}.{i}.log", "w+")  # noqa: SIM115
        cmd = [
            sys.executable,
            script,
            f"--config={ROOT / 'tests' / 'multihost_config.py'}",
            f"--workdir={workdir}",
            f"--stages={','.join(stages)}",
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={i}",
            "--heartbeat_timeout=10",
            "--initialization_timeout=60",
            *extra,
        ]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log))
        logs.append(log)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        meanwhile()
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the processes still ran after {TIMEOUT_S} s: {_read(logs)}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [(p.returncode, text) for p, text in zip(procs, _read(logs), strict=True)]


def _read(logs) -> list[str]:
    texts = []
    for log in logs:
        log.seek(0)
        texts.append(log.read())
        log.close()
    return texts


@pytest.mark.slow
def test_two_processes_write_what_one_process_writes(prepared):
    one, two = _copy(prepared, "one"), _copy(prepared, "two")

    def one_process():  # 8 devices (tests/conftest.py), while the two processes run
        run_stages(get_config(), one, only=list(STAGES))

    results = _run_two_processes(two, STAGES, meanwhile=one_process)
    for rc, log in results:
        assert rc == 0, log[-3000:]
    # INFO logs and progress bars come from process 0 only.
    assert "stage factors" in results[0][1] and "scores small" in results[0][1]
    assert "stage factors" not in results[1][1] and "scores small" not in results[1][1]
    assert (two / "queries.jsonl").read_text() == (one / "queries.jsonl").read_text()
    _assert_same_factors(factors_dir(one, MODEL), factors_dir(two, MODEL))
    _assert_same_scores(scores_dir(one, MODEL), scores_dir(two, MODEL))
    for method in ("tfidf", "random"):
        got, ref = (np.load(baselines_dir(d, MODEL, method) / "scores.npy") for d in (two, one))
        np.testing.assert_array_equal(got, ref)


@pytest.mark.slow
def test_two_processes_train_the_model_one_process_trains(prepared):
    """The pretrain stage on 2 processes × 4 devices: each process feeds its rows of every
    batch, the gradients are all-reduced across processes, process 0 writes. The parameters
    match the 1 × 8 run's (`prepared`) to RTOL_TRAINED over the whole model: float32 training
    whose gradient sums run in another order across devices (~1e-7 relative per step), through
    10 Adam steps. (Leaf by leaf they need not: Adam turns a bias gradient at rounding level
    into a full step of either sign, ~1e-6 absolute; training on another process's rows moves
    the model by ~1e-2.)"""
    two = _copy(prepared, "train_two")
    shutil.rmtree(model_dir(two, MODEL))
    results = _run_two_processes(two, ["pretrain"])
    for rc, log in results:
        assert rc == 0, log[-3000:]
    assert "pretrain small" in results[0][1] and "pretrain small" not in results[1][1]
    assert is_complete(model_dir(two, MODEL))
    ref, got = (load_model(model_dir(d, MODEL)) for d in (prepared, two))
    flat = lambda m: np.concatenate([np.ravel(x) for x in jax.tree.leaves(nnx.state(m))])  # noqa: E731
    assert close(flat(got), flat(ref), RTOL_TRAINED)
    metrics = [
        json.loads((model_dir(d, MODEL) / "metrics.json").read_text()) for d in (prepared, two)
    ]
    assert metrics[1]["final_held_out_loss"] == pytest.approx(
        metrics[0]["final_held_out_loss"], rel=RTOL_TRAINED
    )


def _assert_same_factors(one: Path, two: Path) -> None:
    ref, got = load_factors(one), load_factors(two)
    assert list(got) == list(ref)
    for path in ref:
        r, g = ref[path], got[path]
        for name in ("a_eigvals", "s_eigvals", "lambdas", "diagonal", "tokens_per_sequence"):
            assert close(getattr(g, name), getattr(r, name)), (path, name)
        for side in ("a", "s"):  # the factor the eigenbasis spans (see the module docstring)
            assert close(_factor(g, side), _factor(r, side)), (path, side)


def _factor(f, side: str) -> np.ndarray:
    vecs, vals = (
        np.asarray(getattr(f, f"{side}_eigvecs")),
        np.asarray(getattr(f, f"{side}_eigvals")),
    )
    return (vecs * vals) @ vecs.T


def _assert_same_scores(one: Path, two: Path) -> None:
    for name in ("query_nats", "doc_grad_norms", "self_influence"):  # float64 files
        assert close(np.load(two / f"{name}.npy"), np.load(one / f"{name}.npy")), name
    for name in ("scores", "per_layer"):  # float32 files (DESIGN §4)
        assert close(np.load(two / f"{name}.npy"), np.load(one / f"{name}.npy"), RTOL_FLOAT32)
    parts = sorted(p.name for p in (one / "partitions").iterdir())
    assert parts == sorted(p.name for p in (two / "partitions").iterdir()) and parts
    for part in parts:  # every result in float64, before the float32 files
        with np.load(one / "partitions" / part) as ref, np.load(two / "partitions" / part) as got:
            for key in ref.files:
                assert close(got[key], ref[key]), (part, key)
    ref, got = (json.loads((d / "per_token.json").read_text()) for d in (one, two))
    assert [(r["query_id"], r["doc_id"]) for r in got] == [
        (r["query_id"], r["doc_id"]) for r in ref
    ]
    for r, g in zip(ref, got, strict=True):
        assert close(g["scores"], r["scores"])
    meta = [json.loads((d / "meta.json").read_text()) for d in (one, two)]
    assert meta[1]["contraction"] == meta[0]["contraction"]
    assert is_complete(two)


@pytest.mark.slow
@pytest.mark.parametrize("failing", [0, 1])
def test_a_failing_process_fails_the_run_instead_of_hanging(prepared, failing):
    """Process `failing` raises in its covariance pass while the other waits for it in a
    collective; both must exit non-zero, the failing one with its error, within the heartbeat
    timeout (10 s) plus start-up, and the stage must stay incomplete."""
    workdir = _copy(prepared, f"fail_{failing}")
    started = time.monotonic()
    extra = [f"--fail_process={failing}"]
    results = _run_two_processes(workdir, ["factors"], "tests/multihost_driver.py", extra)
    elapsed = time.monotonic() - started
    for rc, log in results:
        assert rc != 0, log[-3000:]
    assert f"planted failure on process {failing}" in results[failing][1]
    assert not is_complete(factors_dir(workdir, MODEL))
    assert elapsed < 120, elapsed
