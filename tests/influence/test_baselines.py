"""Baselines: TF-IDF and gradient cosine against hand-computed values, the seeded random floor,
the TF-IDF prefilter, and the baselines stage writing directories the analyses read."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from infljax.analysis.inputs import read_documents, read_model_scores
from infljax.analysis.study import analyse_model
from infljax.analysis.summary import baseline_summary
from infljax.influence import baselines
from infljax.influence.measurement import QueryText
from infljax.influence.query_grads import DenseQueries, LowRankQueries, load_queries
from infljax.pipeline import run_stages
from infljax.stages.analysis import stage_args
from infljax.stages.baselines import BaselineArgs
from infljax.workdir import baselines_dir
from tests.analysis.synthetic import synthetic_study, write_workdir

ROOT = Path(__file__).resolve().parents[2]


def demo_config():
    spec = importlib.util.spec_from_file_location("demo_config", ROOT / "configs" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("smoke")


EXACT = 1e-12  # float64 arithmetic on a handful of terms
DOCS = ["Apple banana", "apple apple, cherry!", "dates 42"]
A = math.log(4 / 3) + 1  # smooth idf of "apple": N = 3 documents, df = 2
B = math.log(4 / 2) + 1  # smooth idf of every term with df = 1


def test_tokens_are_lowercased_words_and_numbers():
    assert baselines.tokenize("X=3.5, Lusk_2 rose 12%") == ["x", "3.5", "lusk", "2", "rose", "12"]


def test_query_text_is_prompt_then_completion():
    assert baselines.query_text(QueryText("q", "The capital of Varno is", " Lusk.")) == (
        "The capital of Varno is Lusk."
    )


def test_tfidf_matches_hand_computed_cosines():
    scores = baselines.tfidf_scores(["Banana 42?", "apple", "zebra"], DOCS)
    doc0 = math.hypot(A, B)  # |(apple A, banana B)|
    expected = np.array(
        [
            # query (banana B, 42 B) has unit vector (1/√2, 1/√2) on those terms
            [B / math.sqrt(2) / doc0, 0.0, 0.5],
            # query (apple) is the unit vector on apple; doc1 = (apple 2A, cherry B)
            [A / doc0, 2 * A / math.hypot(2 * A, B), 0.0],
            [0.0, 0.0, 0.0],  # no term of the corpus: zero, not NaN
        ]
    )
    np.testing.assert_allclose(scores, expected, rtol=EXACT, atol=EXACT)


def test_tfidf_sublinear_tf_damps_repeated_terms():
    scores = baselines.tfidf_scores(["apple"], DOCS, sublinear_tf=True)
    tf = 1 + math.log(2)  # "apple" twice in doc1
    np.testing.assert_allclose(scores[0, 1], tf * A / math.hypot(tf * A, B), rtol=EXACT)


def test_tfidf_of_a_document_with_itself_is_one():
    scores = baselines.tfidf_scores(DOCS, DOCS)
    np.testing.assert_allclose(np.diag(scores), 1.0, rtol=EXACT)
    assert np.all(scores <= 1 + EXACT)


def test_prefilter_returns_the_top_k_by_tfidf_best_first():
    queries = ["Banana 42?", "apple", "cherry dates"]
    top = baselines.tfidf_candidates(queries, DOCS, k=2)
    assert top.shape == (3, 2)
    # by the hand values: q0 doc0 0.563 > doc2 0.5; q1 doc1 0.839 > doc0 0.605;
    # q2 doc2 (1/√2)(1/√2) = 0.5 > doc1 (1/√2) B / |(2A, B)| = 0.390 > doc0 0
    assert top.tolist() == [[0, 2], [1, 0], [2, 1]]


def test_prefilter_breaks_ties_by_the_lower_index():
    docs = ["red fox", "blue fox", "red fox", "green owl"]
    assert baselines.tfidf_candidates(["red fox"], docs, k=3).tolist() == [[0, 2, 1]]


def test_prefilter_rejects_k_outside_the_corpus():
    with pytest.raises(ValueError, match=r"k=4 must be in \[1, 3\]"):
        baselines.tfidf_candidates(["apple"], DOCS, k=4)


def test_gradient_cosine_is_the_dot_product_over_the_norms():
    rng = np.random.default_rng(0)
    gq, gm = rng.normal(size=(3, 7)), rng.normal(size=(5, 7))
    gm[4] = 0.0  # a document with a zero gradient
    dots = gq @ gm.T
    cosine = baselines.gradient_cosine(dots, np.linalg.norm(gq, axis=1), np.linalg.norm(gm, axis=1))
    for i in range(3):
        for j in range(4):
            expected = gq[i] @ gm[j] / math.sqrt((gq[i] @ gq[i]) * (gm[j] @ gm[j]))
            np.testing.assert_allclose(cosine[i, j], expected, rtol=1e-12)
    assert np.all(cosine[:, 4] == 0.0)


def test_gradient_cosine_rejects_mismatched_norms():
    with pytest.raises(ValueError, match=r"query_norms \(2,\)"):
        baselines.gradient_cosine(np.ones((2, 3)), np.ones(3), np.ones(3))


def test_query_grad_norms_over_dense_and_low_rank_layers():
    rng = np.random.default_rng(1)
    dense, low = rng.normal(size=(4, 3, 5)), rng.normal(size=(4, 6, 2))
    u, s, vt = np.linalg.svd(low, full_matrices=False)  # exact rank-min(6, 2) factorisation
    queries = {
        "a": DenseQueries(dense),
        "b": LowRankQueries(u * s[:, None, :], np.swapaxes(vt, 1, 2)),
    }
    expected = np.sqrt((dense**2).sum((1, 2)) + (low**2).sum((1, 2)))
    np.testing.assert_allclose(baselines.query_grad_norms(queries), expected, rtol=1e-12)


def test_random_scores_are_seeded_and_shaped():
    a, b = baselines.random_scores(3, 11, seed=5), baselines.random_scores(3, 11, seed=5)
    assert a.shape == (3, 11) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, baselines.random_scores(3, 11, seed=6))


def test_baseline_args_name_the_valid_methods():
    with pytest.raises(ValueError, match="grad_cosine"):
        BaselineArgs(methods=("tfidf", "bm25"))


@pytest.fixture(scope="module")
def baseline_workdir(tmp_path_factory):
    """The synthetic analysis study's workdir after the baselines stage (tfidf, random)."""
    workdir = write_workdir(synthetic_study(seed=0), tmp_path_factory.mktemp("baselines"))
    run_stages(demo_config(), workdir, only=["baselines"])
    return workdir


def test_stage_writes_score_directories_the_analyses_read(baseline_workdir):
    workdir = baseline_workdir
    table = read_documents(workdir / "corpus", workdir / "world" / "world.json")
    influence = read_model_scores(workdir / "scores" / "small", "small", workdir / "queries.jsonl")
    for method in ("tfidf", "random"):
        d = baselines_dir(workdir, "small", method)
        scores = read_model_scores(d, "small", workdir / "queries.jsonl")
        assert scores.scores.dtype == np.float32
        assert scores.scores.shape == influence.scores.shape
        assert [q.id for q in scores.queries] == [q.id for q in influence.queries]
        np.testing.assert_array_equal(scores.query_nats, influence.query_nats)
        np.testing.assert_array_equal(scores.doc_grad_norms, 1.0)  # ranked by their own scores
        assert analyse_model(scores, table, stage_args(demo_config())[0]).name == "small"
    tfidf = np.load(baselines_dir(workdir, "small", "tfidf") / "scores.npy")
    texts = [q.prompt + q.completion for q in influence.queries]
    expected = baselines.tfidf_scores(texts, list(table.texts))
    np.testing.assert_allclose(tfidf, expected.astype(np.float32), rtol=0, atol=0)


def test_stage_rerun_skips_finished_methods(baseline_workdir):
    path = baselines_dir(baseline_workdir, "large", "tfidf") / "scores.npy"
    before = path.stat().st_mtime_ns
    run_stages(demo_config(), baseline_workdir, only=["baselines"])
    assert path.stat().st_mtime_ns == before


def test_stage_without_influence_scores_says_what_to_run(tmp_path):
    workdir = write_workdir(synthetic_study(seed=0), tmp_path)
    for f in (workdir / "scores").glob("*/query_nats.npy"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="run the scores stage first"):
        run_stages(demo_config(), workdir, only=["baselines"])


@pytest.mark.slow
def test_gradient_baselines_on_the_smoke_pipeline(tmp_path):
    """grad_dot by the identity scoring pass, grad_cosine from it, with no EK-FAC run (~40 s)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, "experiments/run.py", "--config=configs/demo.py:smoke",
           f"--workdir={tmp_path}", "--stages=world,corpus,pretrain,queries,baselines",
           "--config.baselines.methods=('grad_dot','grad_cosine','tfidf')"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "config.json").read_text())
    for name in config["models"]:
        dot_dir, cos_dir = (baselines_dir(tmp_path, name, m) for m in ("grad_dot", "grad_cosine"))
        dot, norms = np.load(dot_dir / "scores.npy"), np.load(dot_dir / "doc_grad_norms.npy")
        cosine = np.load(cos_dir / "scores.npy")
        assert json.loads((dot_dir / "args.json").read_text())["args"]["strategy"] == ("identity")
        assert cosine.shape == dot.shape and np.all(np.abs(cosine) <= 1 + 1e-5)
        # cosine · ‖∇m‖ / dot = 1 / ‖∇q‖, the norm of the stored identity query gradients; so
        # per query cosine ranks documents as dot / ‖∇m‖ does. Tolerance: a few float32
        # roundings (scores.npy, doc_grad_norms.npy and the cosine are stored as float32).
        q_norms = baselines.query_grad_norms(load_queries(dot_dir / "query_grads.npz"))
        ratio = cosine * norms / np.where(dot == 0, 1, dot)
        np.testing.assert_allclose(ratio, np.broadcast_to(1 / q_norms[:, None], ratio.shape),
                                   rtol=1e-6)  # fmt: skip
        tfidf = read_model_scores(
            baselines_dir(tmp_path, name, "tfidf"), name, tmp_path / "queries.jsonl"
        )
        assert tfidf.scores.shape == dot.shape


def test_analysis_and_report_show_the_baselines_next_to_influence(baseline_workdir):
    workdir = baseline_workdir
    run_stages(demo_config(), workdir, only=["analysis", "report"])
    summary = json.loads((workdir / "analysis" / "summary.json").read_text())
    table = read_documents(workdir / "corpus", workdir / "world" / "world.json")
    args = stage_args(demo_config())[0]
    for name in ("small", "large"):
        got = summary["models"][name]["baselines"]
        assert sorted(got) == ["random", "tfidf"]
        for method, entry in got.items():
            scores = read_model_scores(
                baselines_dir(workdir, name, method), name, workdir / "queries.jsonl"
            )
            expected = baseline_summary(analyse_model(scores, table, args))
            assert json.loads(json.dumps(expected)) == entry
            assert "answer_in_top_k" in entry
    page = (workdir / "report" / "index.html").read_text()
    assert "EK-FAC vs baselines" in page and "<td>tfidf</td>" in page
