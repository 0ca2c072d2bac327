"""The scores stage on a tiny trained model: the workdir contract, the sign of influence,
breakdowns that sum, resume after interruption, skip and refusal."""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

from infljax import planning, training
from infljax.checkpoints import StageConflict, is_complete
from infljax.distributed import Placement, make_mesh
from infljax.influence.query_grads import QueryArgs
from infljax.influence.run import ModelInputs, ScoresArgs, ScoringRun, _check_query_memory
from infljax.influence.scoring import ScoreArgs
from infljax.models.decoder import DecoderConfig
from infljax.models.io import load_model
from infljax.stages.pretrain import train_model
from infljax.workdir import ScoreFiles, factors_dir, model_dir, scores_dir
from tests.influence.workdirs import write_corpus, write_factors

pytestmark = pytest.mark.slow  # trains a model and fits factors (~20 s)
FLOAT32 = 1e-6  # scores.npy is float32; the per-token and top-k values are float64
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
]
QUERIES = [
    {"id": "capital", "prompt": "The capital of Varno is", "completion": " Lusk."},
    {"id": "solve", "prompt": "Solve 2x + 1 = 7:", "completion": " x = 3"},
    {"id": "birds", "prompt": "Blue birds", "completion": " sing at dawn."},
]  # fmt: skip
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
    """corpus/ (BPE tokenizer), models/tiny (trained), factors/tiny (EK-FAC)."""
    workdir = tmp_path_factory.mktemp("workdir")
    corpus, tokenizer = write_corpus(workdir, TEXTS, max_length=32)
    cfg = DecoderConfig(300, 16, 2, 2, 32, 32, param_dtype="float64")
    args = training.TrainArgs(steps=60, batch_size=4, warmup_steps=5, eval_every=60,
                              checkpoint_every=1000, held_out_fraction=0.0)  # fmt: skip
    mesh = make_mesh(devices=jax.devices()[:2])
    train_model("tiny", cfg, args, corpus, mesh, model_dir(workdir, "tiny"))
    write_factors(workdir, "tiny", load_model(model_dir(workdir, "tiny")), corpus, mesh)
    return workdir, ModelInputs(model_dir(workdir, "tiny"), factors_dir(workdir, "tiny"), corpus,
                                tokenizer, QUERIES)  # fmt: skip


@pytest.fixture(scope="module")
def scored(workdir):
    root, inputs = workdir
    out = scores_dir(root, "tiny")
    ScoringRun("tiny", inputs, ARGS, Placement(make_mesh(devices=jax.devices()[:2])), out).run()
    return out, inputs


def test_outputs_follow_the_workdir_contract(scored):
    out, inputs = scored
    q, n = len(QUERIES), inputs.corpus.num_documents
    scores = np.load(out / "scores.npy")
    assert scores.dtype == np.float32 and scores.shape == (q, n)
    assert np.load(out / "query_nats.npy").shape == (q,) and np.all(
        np.load(out / "query_nats.npy") > 0
    )
    assert np.load(out / "doc_grad_norms.npy").shape == (n,)
    per_layer = np.load(out / "per_layer.npy")
    assert per_layer.shape == (4, q, n)
    np.testing.assert_allclose(
        per_layer.sum(0), scores, rtol=FLOAT32, atol=FLOAT32 * np.abs(scores).max()
    )
    assert np.all(np.load(out / "self_influence.npy") > 0)
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta["contraction"].values()) <= {"dense", "lowrank"} and meta["query_ids"] == [
        r["id"] for r in QUERIES]  # fmt: skip
    lines = (out / "queries.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == meta["query_ids"]
    assert is_complete(out)


def test_a_document_equal_to_the_query_scores_positive_and_ranks_first(scored):
    out, inputs = scored
    scores = np.load(out / "scores.npy")
    for row, text_index in ((0, 0), (1, 7), (2, 8)):  # the corpus rows equal to each query
        assert scores[row, text_index] > 0
        assert np.argmax(scores[row]) == text_index, (row, scores[row])


def test_per_token_scores_sum_to_the_document_score(scored):
    out, _ = scored
    scores = np.load(out / "scores.npy")
    records = json.loads((out / "per_token.json").read_text())
    assert len(records) == len(QUERIES) * ARGS.per_token_top
    for r in records:
        assert len(r["tokens"]) == len(r["scores"]) == len(r["token_ids"])
        np.testing.assert_allclose(sum(r["scores"]), r["score"], rtol=1e-10)
        np.testing.assert_allclose(r["score"], scores[r["query"], r["document"]], rtol=FLOAT32)
        assert r["query_id"] == QUERIES[r["query"]]["id"] and r["doc_id"] == f"d{r['document']}"


def test_top_k_full_rank_rescores_match_a_dense_run(scored, workdir, tmp_path):
    out, inputs = scored
    top = np.load(out / "top_k.npz")
    # A dense run without self-influence: the same compiled scoring step as the re-scoring.
    dense_args = dataclasses.replace(
        ARGS,
        query_grads=QueryArgs(rank=0),
        scoring=dataclasses.replace(ARGS.scoring, self_influence=False),
        rescore_top_k=0,
        per_token_top=0,
    )
    ScoringRun(
        "tiny", inputs, dense_args, Placement(make_mesh(devices=jax.devices()[:2])), tmp_path
    ).run()
    dense = np.load(tmp_path / "scores.npy")
    expected = np.take_along_axis(dense, top["indices"], axis=1)
    np.testing.assert_allclose(top["full_rank_scores"], expected, rtol=FLOAT32)
    assert not np.allclose(top["scores"], top["full_rank_scores"], rtol=1e-3)  # rank 2 < full


def test_interrupted_scoring_resumes_to_identical_outputs(scored, tmp_path):
    out, inputs = scored
    mesh = make_mesh(devices=jax.devices()[:2])
    next(ScoringRun("tiny", inputs, ARGS, Placement(mesh), tmp_path).partitions())
    assert not is_complete(tmp_path) and len(list((tmp_path / "partitions").iterdir())) == 1
    ScoringRun("tiny", inputs, ARGS, Placement(mesh), tmp_path).run()
    assert is_complete(tmp_path)
    for name in ("scores.npy", "doc_grad_norms.npy", "query_nats.npy", "per_layer.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / name), np.load(out / name))


def test_complete_outputs_are_skipped_and_changed_arguments_refused(scored):
    out, inputs = scored
    mesh = make_mesh(devices=jax.devices()[:2])
    before = (out / "scores.npy").stat().st_mtime_ns
    ScoringRun("tiny", inputs, ARGS, Placement(mesh), out).run()
    assert (out / "scores.npy").stat().st_mtime_ns == before
    changed = dataclasses.replace(ARGS, query_grads=QueryArgs(rank=3))
    with pytest.raises(StageConflict, match=r"rank: 2 -> 3"):
        ScoringRun("tiny", inputs, changed, Placement(mesh), out).run()


# ARGS's record as written before the typed config (87d215b): nested under "args", damping in
# two fields, the query settings under "queries", the dense limit in bytes, the batch sizes kept
OLD_RECORD = {"args": {
    "damping_absolute": 0.0, "damping_scale": 0.1, "layers": [r"blocks\.\d+\.mlp\..*"],
    "measurement": {"add_bos": None, "add_eos": False, "chat_template": "", "on_too_long": "error"},
    "per_layer": True, "per_token_top": 2, "rescore_top_k": 2, "strategy": "ekfac",
    "queries": {"batch_size": 16, "oversample": 8, "power_iterations": 2, "rank": 2, "seed": 0,
                "svd": "exact"},
    "scoring": {"batch_size": 4, "contraction": "auto", "max_dense_plan_bytes": 4294967296,
                "partitions": 3, "self_influence": True},
}}  # fmt: skip


def test_a_record_of_the_older_layout_stays_up_to_date(scored, tmp_path):
    """Score directories written before the typed config are upgraded, not recomputed (nor
    refused): the record is rewritten in today's layout and the scores are kept."""
    out, inputs = scored
    copy = tmp_path / "tiny"
    shutil.copytree(out, copy)
    record = json.loads((copy / "args.json").read_text())
    inputs_record = ("queries_sha256", "model", "factors", "corpus")  # no read_from: beside
    old = OLD_RECORD | {k: v for k, v in record["args"].items() if k in inputs_record}
    (copy / "args.json").write_text(json.dumps(record | {"args": old}))
    assert ScoreFiles(copy).method() == "ekfac"  # readers take either layout
    before = (copy / "scores.npy").stat().st_mtime_ns
    ScoringRun("tiny", inputs, ARGS, Placement(make_mesh(devices=jax.devices()[:2])), copy).run()
    assert (copy / "scores.npy").stat().st_mtime_ns == before
    assert json.loads((copy / "args.json").read_text()) == record


@pytest.mark.parametrize("placement, query_groups", [("replicated", 1), ("fsdp", 2)])
def test_bfloat16_mixed_precision_tracks_the_float64_scores(
    scored, tmp_path, placement, query_groups
):
    """param_dtype="bfloat16": parameters, activations and per-sequence gradients in
    bfloat16; the float64 factors unchanged (the preconditioned query gradients follow them).
    bfloat16 keeps 8 significant bits (ε = 2⁻⁸ ≈ 0.4%); a score is a sum over a few layers of
    products of such roundings, so we allow a relative error of 10 ε in the score matrix
    (Frobenius) and require the same top document for each query. Also with the parameters
    FSDP-split (gathered block by block) and the queries prepared in two groups of layers."""
    out, inputs = scored
    queries = dataclasses.replace(ARGS.query_grads, layer_groups=query_groups)
    args = dataclasses.replace(ARGS, param_dtype="bfloat16", query_grads=queries)
    mesh = make_mesh(devices=jax.devices()[:2])
    ScoringRun("tiny", inputs, args, Placement(mesh, placement), tmp_path).run()
    full, mixed = (np.load(d / "scores.npy").astype(np.float64) for d in (out, tmp_path))
    error = np.linalg.norm(mixed - full) / np.linalg.norm(full)
    assert error < 10 * 2.0**-8, error
    np.testing.assert_array_equal(mixed.argmax(axis=1), full.argmax(axis=1))
    record = json.loads((tmp_path / "args.json").read_text())["args"]
    assert record["param_dtype"] == "bfloat16"


def test_fsdp_placement_writes_the_replicated_scores(scored, tmp_path):
    """config.mesh.params="fsdp": parameters split over the 2 devices, gathered in each step;
    same float64 arithmetic up to summation order (the stored scores are float32)."""
    out, inputs = scored
    mesh = make_mesh(devices=jax.devices()[:2])
    ScoringRun("tiny", inputs, ARGS, Placement(mesh, "fsdp"), tmp_path).run()
    for name in ("scores.npy", "per_layer.npy", "self_influence.npy", "doc_grad_norms.npy"):
        np.testing.assert_allclose(np.load(tmp_path / name), np.load(out / name), rtol=FLOAT32)


def test_query_preparation_memory_refusal_names_the_query_layer_groups_that_fit(monkeypatch):
    """The scores stage checks the query preparation (capture, per-layer gradients,
    preconditioning, SVD) for its largest group of layers before it starts: a device that holds
    half the layers' work but not all of it is refused with the groups that fit; with them the
    check passes."""
    cfg = DecoderConfig(
        vocab_size=64, d_model=32, num_layers=2, num_heads=2, d_ff=64, max_length=16
    )
    shapes = planning.ModelShapes.from_config(cfg)
    layout, seq = planning.Layout(data=1), 16
    args = ScoresArgs(
        layers=(r"blocks\.\d+\.mlp\..*",), query_grads=QueryArgs(rank=4, batch_size=4)
    )
    work = planning.Workload(seq=seq, rank=4)

    def needs(groups):
        return planning.largest_group("queries", shapes, groups, work, layout, 4)[1].total

    device = needs(1) - 1
    assert needs(2) <= (1 - planning.HEADROOM) * device
    monkeypatch.setattr(planning, "device_memory_bytes", lambda: device)
    with pytest.raises(planning.PlanError) as error:
        _check_query_memory("tiny", shapes, args, seq, layout)
    assert str(error.value).startswith("queries: needs")
    assert str(error.value).endswith("; or config.scores.query_grads.layer_groups=2 fits")
    grouped = dataclasses.replace(args, query_grads=QueryArgs(rank=4, batch_size=4, layer_groups=2))
    _check_query_memory("tiny", shapes, grouped, seq, layout)
