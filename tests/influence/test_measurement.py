"""The query measurement: completion-only weights, prompt masking, clear errors for bad queries."""

import json

import jax
import numpy as np
import pytest

from infljax.data.tokenization import BOS, EOS, tokenizer_info, train_bpe
from infljax.distributed import shard_batch
from infljax.influence import query_grads
from infljax.influence.measurement import (
    MeasurementArgs,
    QueryError,
    QueryText,
    QueryTruncationWarning,
    completion_batch,
    encode_queries,
    make_nats_fn,
    read_query_records,
)
from infljax.models.losses import Batch

TEXTS = ["the capital of Varno is Lusk.", "2 + 3 = 5, so 5 * 4 = 20."] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(TEXTS, vocab_size=300)


def encode(tokenizer, queries, max_length=64, **kwargs):
    info = tokenizer_info(tokenizer)
    return encode_queries(queries, tokenizer, info, max_length, MeasurementArgs(**kwargs))


def test_rows_are_bos_prompt_completion_and_only_completion_predictions_count(tokenizer):
    q = QueryText("q0", "The capital of Varno is", " Lusk.")
    tokens = encode(tokenizer, [q])
    prompt = tokenizer.encode("The capital of Varno is", add_special_tokens=False).ids
    completion = tokenizer.encode(" Lusk.", add_special_tokens=False).ids
    n = 1 + len(prompt) + len(completion)
    assert tokens.tokens[0, :n].tolist() == [tokenizer_info(tokenizer).bos_id, *prompt, *completion]
    assert tokens.prompt_lengths[0] == 1 + len(prompt) and tokens.lengths[0] == n
    batch = tokens.batch()
    weighted = np.flatnonzero(np.asarray(batch.weights[0]))
    assert weighted.tolist() == list(range(len(prompt), n - 1))
    assert tokenizer.decode(np.asarray(batch.targets[0])[weighted].tolist()) == " Lusk."


def test_eos_is_measured_only_when_asked(tokenizer):
    q = QueryText("q0", "2 + 3 =", " 5")
    plain, with_eos = encode(tokenizer, [q]), encode(tokenizer, [q], add_eos=True)
    assert with_eos.lengths[0] == plain.lengths[0] + 1
    eos = tokenizer_info(tokenizer).eos_id
    assert with_eos.tokens[0, with_eos.lengths[0] - 1] == eos
    assert float(with_eos.batch().weights.sum()) == float(plain.batch().weights.sum()) + 1


def test_special_token_strings_and_chat_template_are_plain_text(tokenizer):
    q = QueryText("q0", f"say {EOS}", f" {BOS} ok")
    tokens = encode(tokenizer, [q], chat_template="User: {prompt}\nAssistant:")
    info = tokenizer_info(tokenizer)
    row = tokens.tokens[0, 1 : tokens.lengths[0]].tolist()
    assert info.eos_id not in row and info.bos_id not in row
    assert tokenizer.decode(row[: tokens.prompt_lengths[0] - 1]) == f"User: say {EOS}\nAssistant:"
    with pytest.raises(ValueError, match="placeholder"):
        MeasurementArgs(chat_template="no placeholder")


def test_empty_completion_is_a_clear_error(tokenizer):
    with pytest.raises(QueryError, match="'q1'.*completion is empty"):
        encode(tokenizer, [QueryText("q0", "a", " b"), QueryText("q1", "a", "")])


def test_too_long_query_errors_or_truncates_the_prompt_with_a_warning(tokenizer):
    q = QueryText("long", "2 + 3 = 5, so 5 * 4 = 20. " * 4, " 20.")
    completion = tokenizer.encode(" 20.", add_special_tokens=False).ids
    with pytest.raises(QueryError, match="'long' is .* max_length is 12.*'truncate'.*'skip'"):
        encode(tokenizer, [q], max_length=12)
    with pytest.warns(QueryTruncationWarning, match="'long'"):
        tokens = encode(tokenizer, [q], max_length=12, on_too_long="truncate")
    assert tokens.lengths[0] == 12 and tokens.truncated == ("long",)
    assert tokens.tokens[0, 0] == tokenizer_info(tokenizer).bos_id
    assert tokens.tokens[0, 12 - len(completion) : 12].tolist() == completion
    with pytest.raises(QueryError, match="completion alone does not fit"):
        encode(tokenizer, [q], max_length=len(completion), on_too_long="truncate")
    short = QueryText("short", "2 + 3 =", " 5")
    with pytest.warns(QueryTruncationWarning, match="'long'.*skipped"):
        tokens = encode(tokenizer, [q, short], max_length=12, on_too_long="skip")
    assert tokens.query_ids == ("short",) and tokens.skipped == ("long",)
    with pytest.raises(QueryError, match="every query"), pytest.warns(QueryTruncationWarning):
        encode(tokenizer, [q], max_length=12, on_too_long="skip")


def test_changing_prompt_labels_leaves_measurement_and_gradient_unchanged(split, layers, mesh1):
    graphdef, state = split
    batch = completion_batch(np.array([[1, 3, 4, 5, 6, 7]]), np.array([3]), np.array([6]))
    relabelled = np.asarray(batch.targets).copy()
    relabelled[np.asarray(batch.weights) == 0] = 9  # every unweighted (prompt / pad) label
    other = Batch(batch.inputs, relabelled, batch.weights)
    nats_fn, grads_fn = make_nats_fn(graphdef), query_grads.make_query_grads_fn(graphdef, layers)
    nats = [float(nats_fn(state, shard_batch(b, mesh1))[0]) for b in (batch, other)]
    grads = [jax.device_get(grads_fn(state, shard_batch(b, mesh1))) for b in (batch, other)]
    assert nats[0] == nats[1] and nats[0] > 0
    for p in layers:
        np.testing.assert_array_equal(grads[0][p], grads[1][p])
    completion_changed = relabelled.copy()
    completion_changed[0, 3] = 9  # a weighted (completion) label
    changed = Batch(batch.inputs, completion_changed, batch.weights)
    assert float(nats_fn(state, shard_batch(changed, mesh1))[0]) != nats[0]


def test_query_records_are_read_filtered_by_model_and_checked(tmp_path):
    path = tmp_path / "queries.jsonl"
    rows = [
        {"id": "a", "prompt": "p", "completion": " c", "family": "f"},
        {"id": "b", "prompt": "p", "completion": " c", "model": "small"},
        {"id": "c", "prompt": "p", "completion": " c", "model": "large"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["id"] for r in read_query_records(path, model="small")] == ["a", "b"]
    assert read_query_records(path)[0]["family"] == "f"  # every field kept
    path.write_text(json.dumps({"id": "a", "prompt": "p"}) + "\n")
    with pytest.raises(QueryError, match=r"queries.jsonl:1: fields \['completion'\]"):
        read_query_records(path)
    path.write_text((json.dumps(rows[0]) + "\n") * 2)
    with pytest.raises(QueryError, match="duplicate query ids"):
        read_query_records(path)
    with pytest.raises(FileNotFoundError, match="queries stage"):
        read_query_records(tmp_path / "missing.jsonl")
