"""Inputs and failures (issue 16): nothing stale, nothing silently wrong, one clear line for
every user mistake. Each test fails on the behaviour before it."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from infljax.checkpoints import (
    NonFiniteError,
    StageConflict,
    begin_stage,
    check_finite,
    fingerprint,
    finish_stage,
    save_pytree,
)
from infljax.curvature import open_factors, save_factors
from infljax.curvature.state import LayerFactors
from infljax.data.readers import CorpusError
from infljax.influence.measurement import QueryError, QueryText, encode_queries
from infljax.models.architectures import CheckpointError
from infljax.models.convert import SafetensorsReader
from infljax.pipeline import ConfigError, run_stages
from infljax.platform import error_line
from infljax.queries.registry import FamilyError
from infljax.workdir import WorkdirError, corpus_dir
from tests.analysis.conftest import demo_config

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "hf"


def launch(workdir, *flags: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, "experiments/run.py", "--config=configs/demo.py:smoke",
           f"--workdir={workdir}", *flags]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The launcher's error: exit status 1, no traceback, one line starting 'error'."""
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def corpus_config(path: Path, max_length: int = 64):
    config = demo_config("smoke")
    config.corpus.path = str(path)
    config.corpus.max_length = max_length
    return config


DOCS = [{"id": f"d{i}", "text": f"document {i} says {'ab ' * (i + 1)}"} for i in range(40)]


# --- 1. inputs keyed by content, 6. a movable workdir -------------------------------------------


def test_a_corpus_fixed_in_place_is_tokenised_again(tmp_path):
    source = jsonl(tmp_path / "docs.jsonl", DOCS)
    workdir = tmp_path / "w"
    run_stages(corpus_config(source), workdir, only=["corpus"])
    first = np.load(corpus_dir(workdir) / "lengths.npy")
    jsonl(source, DOCS[:30])  # fixed in place, same path
    run_stages(corpus_config(source), workdir, only=["corpus"])
    assert len(np.load(corpus_dir(workdir) / "lengths.npy")) == 30 != len(first)


def test_a_fixed_corpus_retrains_the_model_instead_of_conflicting(tmp_path):
    source = jsonl(tmp_path / "docs.jsonl", DOCS)
    config = corpus_config(source)
    with config.unlocked():
        config.models = {"small": config.models.small}
    run_stages(config, tmp_path / "w", only=["corpus", "pretrain"])
    metrics = tmp_path / "w" / "models" / "small" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    jsonl(source, DOCS[:35])
    run_stages(config, tmp_path / "w", only=["corpus", "pretrain"])  # no StageConflict
    assert metrics.stat().st_mtime_ns != before


def test_a_recomputed_stage_makes_the_stages_reading_it_recompute(tmp_path):
    upstream, downstream = tmp_path / "up", tmp_path / "down"
    assert not begin_stage(upstream, {"a": 1})
    finish_stage(upstream)
    assert not begin_stage(downstream, {"b": 1}, inputs={"up": upstream})
    (downstream / "out.npy").write_bytes(b"x")
    finish_stage(downstream)
    assert begin_stage(downstream, {"b": 1}, inputs={"up": upstream})  # unchanged: skipped
    assert not begin_stage(upstream, {"a": 1}, overwrite=True)  # recomputed: a new run id
    finish_stage(upstream)
    assert not begin_stage(downstream, {"b": 1}, inputs={"up": upstream})
    assert not (downstream / "out.npy").exists()  # stale outputs removed


def test_external_files_are_keyed_by_size_and_mtime(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("one")
    before = fingerprint(path)
    assert fingerprint(path) == before
    path.write_text("two!")
    assert fingerprint(path) != before
    assert fingerprint(tmp_path / "missing") is None


def test_a_moved_workdir_is_up_to_date(tmp_path):
    config = demo_config("smoke")
    workdir = tmp_path / "a"
    run_stages(config, workdir, only=["world", "corpus"])
    moved = tmp_path / "b"
    shutil.move(workdir, moved)
    stamp = (corpus_dir(moved) / "tokens.npy").stat().st_mtime_ns
    run_stages(config, moved, only=["world", "corpus"])  # no conflict on the stored path
    assert (corpus_dir(moved) / "tokens.npy").stat().st_mtime_ns == stamp
    record = json.loads((corpus_dir(moved) / "args.json").read_text())
    assert record["args"]["input"] == "world/corpus.jsonl"


# --- 2. non-finite checks -----------------------------------------------------------------------


def layer(d_out: int = 3, d_in: int = 4, fill: float = 1.0) -> LayerFactors:
    eye = lambda n: jnp.eye(n)  # noqa: E731
    return LayerFactors(
        eye(d_in), jnp.ones(d_in), eye(d_out), jnp.ones(d_out),
        jnp.full((d_out, d_in), fill), jnp.ones((d_out, d_in)), jnp.asarray(5.0),
    )  # fmt: skip


def test_a_corrupted_factor_file_is_refused_naming_layer_and_file(tmp_path):
    save_factors(tmp_path, {"blocks.0.mlp.up": layer()})
    assert np.isfinite(open_factors(tmp_path)["blocks.0.mlp.up"].lambdas).all()
    save_pytree(tmp_path / "layers" / "blocks.0.mlp.up", layer(fill=np.nan))  # corrupted
    with pytest.raises(NonFiniteError, match=r"blocks\.0\.mlp\.up.*layers/blocks\.0\.mlp\.up"):
        open_factors(tmp_path)["blocks.0.mlp.up"]


def test_non_finite_factors_are_never_saved(tmp_path):
    with pytest.raises(NonFiniteError, match="blocks.1.attn.q.*lambdas"):
        save_factors(tmp_path, {"blocks.1.attn.q": layer(fill=np.inf)})
    with pytest.raises(NonFiniteError, match="the scores"):
        check_finite("the scores", np.array([[0.0, np.nan]]))


def test_a_checkpoint_with_a_nan_weight_is_refused_naming_the_tensor(tmp_path):
    src = Path(shutil.copytree(FIXTURES / "llama_gqa_linear", tmp_path / "ckpt"))
    tensors = load_file(src / "model.safetensors")
    name = "model.norm.weight"
    tensors[name] = tensors[name].copy()
    tensors[name][0] = np.nan
    save_file(tensors, src / "model.safetensors")
    with SafetensorsReader(src) as reader:
        with pytest.raises(CheckpointError, match=f"{name}.*model.safetensors.*NaN"):
            reader.get(name)


# --- 3. a refused run records nothing; overwrite recomputes ------------------------------------


def test_an_invalid_value_is_refused_before_any_stage_runs(tmp_path):
    config = demo_config("smoke")
    config.scores.damping.scale = 0.0
    with pytest.raises(ConfigError, match="stage scores: scores.damping"):
        run_stages(config, tmp_path / "w")
    assert not (tmp_path / "w").exists()  # nothing written, so the corrected rerun is free
    config = demo_config("smoke")
    config.queries.families.slope.type = "nope"
    with pytest.raises(ConfigError, match="stage queries: unknown query family type 'nope'"):
        run_stages(config, tmp_path / "w", only=["world", "queries"])


def test_a_record_without_outputs_is_no_conflict(tmp_path):
    assert not begin_stage(tmp_path / "s", {"damping": 0.0})  # then refused before writing
    assert not begin_stage(tmp_path / "s", {"damping": 0.1})  # the corrected rerun
    (tmp_path / "s" / "part_0.npz").write_bytes(b"x")  # resumable partial outputs are kept...
    with pytest.raises(StageConflict, match="damping: 0.1 -> 0.2"):
        begin_stage(tmp_path / "s", {"damping": 0.2})
    assert not begin_stage(tmp_path / "s", {"damping": 0.2}, resumes=False)  # ...unless none


def test_overwrite_recomputes_a_complete_stage(tmp_path):
    begin_stage(tmp_path, {"a": 1})
    (tmp_path / "bad.npy").write_bytes(b"x")
    finish_stage(tmp_path)
    assert begin_stage(tmp_path, {"a": 1})
    assert not begin_stage(tmp_path, {"a": 1}, overwrite=True)
    assert not (tmp_path / "bad.npy").exists()


# --- 4. empty inputs fail where they are ------------------------------------------------------


def test_an_empty_corpus_file_is_refused(tmp_path):
    source = tmp_path / "empty.jsonl"
    source.write_text("")
    with pytest.raises(CorpusError, match="0 documents after reading; the input holds no"):
        run_stages(corpus_config(source), tmp_path / "w", only=["corpus"])


def test_a_corpus_of_bad_records_names_them_and_lists_all(tmp_path):
    source = jsonl(tmp_path / "bad.jsonl", [{"id": f"x{i}", "txt": "no text"} for i in range(7)])
    workdir = tmp_path / "w"
    with pytest.raises(CorpusError, match=r"0 documents after reading; 7 bad records.*line 1"):
        run_stages(corpus_config(source), workdir, only=["corpus"])
    listed = (corpus_dir(workdir) / "bad_records.jsonl").read_text().splitlines()
    assert [json.loads(line)["line_or_row"] for line in listed] == list(range(1, 8))
    jsonl(source, DOCS)  # fixed: the same command now works (the failed run is no conflict)
    run_stages(corpus_config(source), workdir, only=["corpus"])
    assert (corpus_dir(workdir) / "bad_records.jsonl").read_text() == ""


def test_truncated_documents_are_counted_and_named(tmp_path):
    long = {"id": "long-one", "text": "word " * 200}
    source = jsonl(tmp_path / "docs.jsonl", [*DOCS, long])
    run_stages(corpus_config(source, max_length=32), tmp_path / "w", only=["corpus"])
    stats = json.loads((corpus_dir(tmp_path / "w") / "stats.json").read_text())
    assert stats["num_truncated"] == len(stats["truncated"]) >= 1
    assert "long-one" in stats["truncated"]


def test_an_empty_query_file_is_refused(tmp_path):
    config = demo_config("smoke")
    (tmp_path / "queries.jsonl").write_text("\n")
    with config.unlocked():
        config.queries.families.mine = {"type": "jsonl", "count": 0,
                                        "path": str(tmp_path / "queries.jsonl")}  # fmt: skip
    with pytest.raises(FamilyError, match="holds no query records"):
        run_stages(config, tmp_path / "w", only=["world", "queries"])


def test_empty_completions_are_counted_and_named(tmp_path):
    from infljax.data.tokenization import tokenizer_info, train_bpe

    tokenizer = train_bpe(["some text to learn from"] * 20, vocab_size=300)
    queries = [QueryText(f"q{i}", "a prompt", "" if i % 2 else "yes") for i in range(6)]
    with pytest.raises(
        QueryError, match=r"\['q1', 'q3', 'q5'\] \(3 in all\): the completion is empty"
    ):
        encode_queries(queries, tokenizer, tokenizer_info(tokenizer), 32)
    with pytest.raises(QueryError, match="no queries"):
        encode_queries([], tokenizer, tokenizer_info(tokenizer), 32)


# --- 5. one line, exit 1, for every user mistake ----------------------------------------------


def test_user_mistakes_are_one_line_each(tmp_path):
    (tmp_path / "file").write_text("")
    cases = {
        ("--stages=nope",): "unknown stage(s) ['nope']",
        ("--config.scores.query_grads.rnak=3",): "no field 'rnak'; did you mean 'rank'?",
        ("--config.corpus.path=/no/such.jsonl", "--stages=world,corpus"): "does not exist",
        ("--config.factors.batch_size=0",): "stage factors: factors.batch_size must be positive",
        ("--config.factors.batch_size=-3",): "factors.batch_size",
    }
    for flags, expected in cases.items():
        assert expected in one_error_line(launch(tmp_path / "w", *flags)), flags
    assert "is a file" in one_error_line(launch(tmp_path / "file", "--stages=world"))
    verbose = launch(tmp_path / "w", "--stages=nope", "--verbose")
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr


def test_disk_full_and_read_only_are_one_line():
    full = OSError(errno.ENOSPC, "No space left on device", "runs/demo/scores/x.npy")
    assert error_line(full).startswith("disk full writing runs/demo/scores/x.npy")
    read_only = OSError(errno.EROFS, "Read-only file system", "/mnt/ro/w")
    assert "read-only file system" in error_line(read_only)
    assert error_line(RuntimeError("boom")) == (
        "error (RuntimeError): boom  [--verbose shows the traceback]"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_workdir_is_refused(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(WorkdirError, match="not writable"):
            run_stages(demo_config("smoke"), tmp_path / "w", only=["world"])
    finally:
        tmp_path.chmod(0o700)


# experiments/run.py with SIGINT at Python's default: a suite started as a background job
# (`make test &`) runs with SIGINT ignored, a child inherits that, and a Python started so never
# sees Ctrl-C (resetting it in the child with preexec_fn would fork a multithreaded process)
_WITH_DEFAULT_SIGINT = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def test_ctrl_c_is_one_line_and_resumable(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, "-c", _WITH_DEFAULT_SIGINT, "experiments/run.py",
           "--config=configs/demo.py:smoke", f"--workdir={tmp_path / 'w'}"]  # fmt: skip
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.monotonic() + 240
    while "stage pretrain" not in seen and time.monotonic() < deadline:
        seen += process.stderr.readline()
    process.send_signal(signal.SIGINT)
    rest = process.communicate(timeout=120)[1]
    assert process.returncode == 130, rest[-2000:]
    assert "Traceback" not in rest and "interrupted; rerun the same command to resume" in rest
