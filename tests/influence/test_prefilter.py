"""The TF-IDF prefilter in the scores stage: k = N changes nothing, a small k scores exactly each
query's candidates (with the unfiltered values) and streams only their union, and the analyses
run on prefiltered scores. An untrained float64 decoder suffices: nothing here needs learning."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from flax import nnx
from ml_collections import ConfigDict

from infljax.distributed import Placement, make_mesh
from infljax.influence import baselines, prefilter
from infljax.influence.measurement import QueryText
from infljax.influence.query_grads import QueryArgs
from infljax.influence.run import ModelInputs, ScoresArgs, ScoringRun
from infljax.influence.scoring import BatchScores, ScoreArgs
from infljax.models.decoder import Decoder, DecoderConfig
from infljax.models.io import save_model
from infljax.pipeline import run_stages
from infljax.workdir import (
    analysis_dir,
    factors_dir,
    model_dir,
    queries_path,
    scores_dir,
)
from tests.analysis.conftest import demo_config
from tests.influence.workdirs import write_corpus, write_factors

# scores.npy / per_layer.npy are float32 casts of float64 scores; a document scored in another
# batch may round to the neighbouring float32, so compare to float32 resolution.
FLOAT32 = 1e-6
TEXTS = [
    "The capital of Varno is Lusk.",
    "Merro has a river called Tavik.",
    "print(3 * 4) shows 12",
    "x = 7 - 2 gives x = 5",
    "The tallest mountain is Orrin.",
    "A slope of 2 means up 2 per step.",
    "web page about 42 cats",
    "Solve 2x + 1 = 7: x = 3",
    "Blue birds sing at dawn.",
    "Old maps list 19 towns.",
    "Lusk lies on the coast of Varno.",
    "Green frogs sing at night.",
    "Solve 3x = 9 to get x = 3",
    "Tavik flows past old mills.",
]
QUERIES = [
    {"id": "capital", "family": "factual", "prompt": "The capital of Varno is",
     "completion": " Lusk.", "answer": "Lusk"},
    {"id": "solve", "family": "linear", "prompt": "Solve 2x + 1 = 7:", "completion": " x = 3",
     "answer": "3", "steps": ["6", "3"]},
    {"id": "birds", "family": "factual", "prompt": "Blue birds", "completion": " sing at dawn.",
     "answer": "dawn"},
]  # fmt: skip
K = 3
SLOW = pytest.mark.slow  # builds a workdir, fits factors and scores three times (~20 s)
ARGS = ScoresArgs(
    layers=(r"blocks\.\d+\.mlp\..*",),
    strategy="ekfac",
    query_grads=QueryArgs(rank=2),
    scoring=ScoreArgs(batch_size=4, partitions=3, self_influence=True),
    rescore_top_k=2,
    per_token_top=2,
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """corpus/ (BPE tokenizer), models/tiny (untrained, float64), factors/tiny, queries.jsonl."""
    workdir = tmp_path_factory.mktemp("workdir")
    corpus, tokenizer = write_corpus(workdir, TEXTS, max_length=24)
    cfg = DecoderConfig(300, 8, 2, 2, 16, 24, param_dtype="float64")
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    save_model(model_dir(workdir, "tiny"), model)
    mesh = make_mesh(devices=jax.devices()[:2])
    write_factors(workdir, "tiny", model, corpus, mesh)
    queries_path(workdir).write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    inputs = ModelInputs(model_dir(workdir, "tiny"), factors_dir(workdir, "tiny"), corpus,
                         tokenizer, QUERIES)  # fmt: skip
    return workdir, inputs, mesh


def outputs(out):
    files = ("scores", "per_layer", "doc_grad_norms", "self_influence", "scored")
    arrays = {f: np.load(out / f"{f}.npy") for f in files if (out / f"{f}.npy").is_file()}
    return arrays, json.loads((out / "meta.json").read_text())


@pytest.fixture(scope="module")
def full(workdir, tmp_path_factory):
    _, inputs, mesh = workdir
    out = tmp_path_factory.mktemp("full")
    ScoringRun("tiny", inputs, ARGS, Placement(mesh), out).run()
    return out, *outputs(out)


@pytest.fixture(scope="module")
def filtered(workdir):
    """prefilter_k = K into the workdir's scores/tiny (the analysis test reads it there)."""
    root, inputs, mesh = workdir
    out = scores_dir(root, "tiny")
    ScoringRun("tiny", inputs, dataclasses.replace(ARGS, prefilter_k=K), Placement(mesh), out).run()
    return out, *outputs(out)


def candidates() -> np.ndarray:
    texts = [baselines.query_text(QueryText.from_record(q)) for q in QUERIES]
    return baselines.tfidf_candidates(texts, TEXTS, K)


@SLOW
def test_prefilter_of_every_document_equals_the_unfiltered_run(workdir, full, tmp_path):
    _, inputs, mesh = workdir
    n = len(TEXTS)
    ScoringRun(
        "tiny", inputs, dataclasses.replace(ARGS, prefilter_k=n), Placement(mesh), tmp_path
    ).run()
    arrays, meta = outputs(tmp_path)
    full_out, full_arrays, full_meta = full
    assert arrays.pop("scored").all() and "scored" not in full_arrays
    assert arrays.keys() == full_arrays.keys()
    for name, expected in full_arrays.items():
        np.testing.assert_array_equal(arrays[name], expected, err_msg=name)
    with np.load(tmp_path / "top_k.npz") as top, np.load(full_out / "top_k.npz") as top_full:
        for name in top_full.files:
            np.testing.assert_array_equal(top[name], top_full[name], err_msg=name)
    per_token = json.loads((tmp_path / "per_token.json").read_text())
    assert per_token == json.loads((full_out / "per_token.json").read_text())
    assert meta["documents_streamed"] == full_meta["documents_streamed"] == n
    assert (meta["prefilter_k"], full_meta["prefilter_k"]) == (n, 0)


@SLOW
def test_small_k_scores_exactly_each_querys_tfidf_candidates(full, filtered):
    _, arrays, _ = filtered
    expected_mask = np.zeros((len(QUERIES), len(TEXTS)), bool)
    np.put_along_axis(expected_mask, candidates(), True, axis=1)
    scored = arrays["scored"]
    assert scored.dtype == bool and np.array_equal(scored.sum(axis=1), [K] * len(QUERIES))
    np.testing.assert_array_equal(scored, expected_mask)
    scores, reference = arrays["scores"], full[1]["scores"]
    assert scores.shape == reference.shape
    atol = FLOAT32 * np.abs(reference).max()
    np.testing.assert_allclose(scores[scored], reference[scored], rtol=FLOAT32, atol=atol)
    assert np.all(scores[~scored] == 0)  # unscored: "no estimated influence"
    per_layer = arrays["per_layer"]
    assert np.all(per_layer[:, ~scored] == 0)
    np.testing.assert_allclose(per_layer.sum(0), scores, rtol=FLOAT32, atol=atol)


@SLOW
def test_only_the_union_of_candidates_is_streamed(full, filtered):
    _, arrays, meta = filtered
    union = np.unique(candidates())
    assert meta["documents_streamed"] == len(union) < len(TEXTS)
    assert meta["prefilter_k"] == K
    streamed = np.zeros(len(TEXTS), bool)
    streamed[union] = True
    for name in ("doc_grad_norms", "self_influence"):  # per document: every streamed row
        values, reference = arrays[name], full[1][name]
        np.testing.assert_allclose(values[streamed], reference[streamed], rtol=1e-10)
        assert np.all(values[~streamed] == 0) and np.all(values[streamed] > 0), name


@SLOW
def test_breakdowns_pick_among_the_scored_entries(filtered):
    out, arrays, _ = filtered
    scores, scored = arrays["scores"], arrays["scored"]
    top = np.load(out / "top_k.npz")
    assert top["indices"].shape == (len(QUERIES), ARGS.rescore_top_k)
    assert np.take_along_axis(scored, top["indices"], axis=1).all()
    ranked = np.where(scored, scores, -np.inf)
    best = np.argsort(-ranked, axis=1, kind="stable")[:, : ARGS.rescore_top_k]
    np.testing.assert_array_equal(top["indices"], best)
    records = json.loads((out / "per_token.json").read_text())
    assert len(records) == len(QUERIES) * ARGS.per_token_top
    assert all(scored[r["query"], r["document"]] for r in records)


def test_expand_places_streamed_columns_and_zeros_the_rest():
    pre = prefilter.Prefilter(np.array([[3, 1], [1, 0]]), num_documents=5)
    rows = pre.rows  # [0, 1, 3]
    streamed = BatchScores(
        scores=np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
        per_layer=np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]),
        sq_norms=np.array([7.0, 8.0, 9.0]),
        self_influence=np.array([0.5, 0.25, 0.125]),
    )
    out = prefilter.expand(streamed, pre)
    np.testing.assert_array_equal(rows, [0, 1, 3])
    np.testing.assert_array_equal(out.scores, [[0, 2, 0, 3, 0], [4, 5, 0, 0, 0]])
    np.testing.assert_array_equal(out.per_layer[0], out.scores)
    np.testing.assert_array_equal(out.sq_norms, [7, 8, 0, 9, 0])
    np.testing.assert_array_equal(out.self_influence, [0.5, 0.25, 0, 0.125, 0])
    with pytest.raises(ValueError, match="3 candidate rows"):
        prefilter.expand(streamed.take(slice(0, 2)), pre)


@SLOW
def test_analysis_and_report_run_on_prefiltered_scores(workdir, filtered):
    root = workdir[0]
    config = demo_config()
    with config.unlocked():
        config.models = ConfigDict({"tiny": {}})
    run_stages(config, root, only=["analysis", "report"])
    summary = json.loads((analysis_dir(root) / "summary.json").read_text())
    assert "tiny" in summary["models"]
    assert (root / "report" / "index.html").is_file()
