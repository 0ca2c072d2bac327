"""Tokenisation conventions (issue 17): a corpus and its queries tokenised as the checkpoint's
users tokenise them (Llama's tokenizer adds BOS, GPT-2's and GPT-NeoX's nothing), and the
pipeline's gradients and EK-FAC eigenvalues on such a corpus equal an independent float64
reference: plain `jax.grad` of each document's summed next-token NLL, from the logits.

Tolerances: gradients and eigenvalues 1e-10 relative (float64, summation order only); scores
1e-6 relative (`influence_scores` returns float32).
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from infljax.curvature import FactorArgs, fit_factors
from infljax.data.batches import row_batches
from infljax.data.corpus import TokenizeArgs, tokenize_corpus
from infljax.data.readers import Record
from infljax.data.tokenization import TokenizerArgs, TokenizerError, tokenizer_info, wrapping
from infljax.distributed import Placement, make_mesh
from infljax.influence.measurement import MeasurementArgs, QueryText, encode_queries
from infljax.influence.model_scores import InfluenceArgs, influence_scores
from infljax.influence.query_grads import QueryArgs
from infljax.models.capture import select_layers
from infljax.models.convert import ConvertArgs, load_hf
from infljax.stages.corpus import CorpusSource, conventions

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hf"
WORDS = [f"w{i}" for i in range(56)]  # + specials: within the fixtures' vocabulary of 64
TEXTS = [" ".join(WORDS[(7 * d + 3 * k) % 56] for k in range(4 + d % 5)) for d in range(12)]
RTOL = 1e-10


def word_tokenizer(specials: list[str], template: str | None) -> Tokenizer:
    """A word-level tokenizer: `specials` first, then WORDS; `template` ("<s> $A") as its
    post-processor, like Llama's; None adds nothing, like GPT-2's."""
    vocab = {t: i for i, t in enumerate([*specials, *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=specials[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if template is not None:
        used = [(t, vocab[t]) for t in specials if t in template]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=used
        )
    tokenizer.add_special_tokens(specials)
    return tokenizer


LLAMA = ("llama_gqa_linear", ["<unk>", "<s>", "</s>"], "<s> $A")
GPT2 = ("gpt2", ["<|endoftext|>"], None)


def section(train: bool = False, **corpus) -> CorpusSource:
    return CorpusSource(tokenizer=TokenizerArgs(train=train), **corpus)


def test_the_default_follows_the_tokenizer():
    llama, gpt2 = word_tokenizer(*LLAMA[1:]), word_tokenizer(*GPT2[1:])
    assert wrapping(llama) == (True, False) and wrapping(gpt2) == (False, False)
    bert = word_tokenizer(["[UNK]", "[CLS]", "[SEP]"], "[CLS] $A [SEP]")
    assert wrapping(bert) == (True, True)
    info = conventions(llama, section())
    assert (info.add_bos, info.add_eos, info.bos_id) == (True, False, 1)
    info = conventions(gpt2, section())
    assert (info.add_bos, info.add_eos) == (False, False)
    forced = conventions(gpt2, section(add_eos=True))
    assert forced.add_eos and forced.eos_id == 0  # <|endoftext|> ends documents when asked
    trained = section(train=True)
    assert conventions(llama, trained).add_eos  # a tokenizer trained here: BOS and EOS


def test_documents_are_the_tokenizers_own_ids():
    tokenizer = word_tokenizer(*LLAMA[1:])
    corpus, _ = tokenize_corpus(
        [Record(str(i), "web", t) for i, t in enumerate(TEXTS)],
        tokenizer,
        TokenizeArgs(max_length=16),
        conventions(tokenizer, section()),
    )
    for row, text in enumerate(TEXTS):
        ids = tokenizer.encode(text).ids  # what a Hugging Face user gets: BOS, no EOS
        assert corpus.tokens[row, : corpus.lengths[row]].tolist() == ids[:16]


def test_a_tokenizer_without_eos_is_usable_when_nothing_is_appended():
    tokenizer = word_tokenizer(["<unk>", "<s>"], "<s> $A")
    assert tokenizer_info(tokenizer, add_eos=False).add_bos
    with pytest.raises(TokenizerError, match="config.corpus.tokenizer.eos_token"):
        tokenizer_info(tokenizer, add_eos=True)
    named = tokenizer_info(tokenizer, eos_token="<unk>")
    assert named.eos_id == 0


def test_queries_start_as_documents_do_unless_told():
    tokenizer = word_tokenizer(*GPT2[1:])
    info = conventions(tokenizer, section())
    query = [QueryText("q", "w1 w2", "w3")]
    bare = encode_queries(query, tokenizer, info, 16)
    assert bare.tokens[0, : bare.lengths[0]].tolist() == tokenizer.encode("w1 w2 w3").ids
    assert bare.prompt_lengths[0] == 2
    told = encode_queries(query, tokenizer, info, 16, MeasurementArgs(add_bos=True))
    assert told.tokens[0, 0] == info.bos_id and told.prompt_lengths[0] == 3


def reference_gradients(model, sequences, prompt_lengths, layers) -> dict[str, np.ndarray]:
    """{layer: [n, d_out, d_in(+1)]}: jax.grad of each sequence's NLL of its tokens after
    `prompt_lengths` (from the logits; nothing of the pipeline's batching or masking)."""
    graphdef, params = nnx.split(model, nnx.Param)

    def nll(p, ids, start):
        logp = jax.nn.log_softmax(nnx.merge(graphdef, p)(ids[None])[0], axis=-1)
        picked = jnp.take_along_axis(logp[:-1], ids[1:, None], axis=1)[:, 0]
        return -jnp.sum(picked[start - 1 :])

    out = {path: [] for path in layers}
    for ids, start in zip(sequences, prompt_lengths, strict=True):
        grads = jax.grad(nll)(params, jnp.asarray(ids), max(int(start), 1))
        for path in layers:
            node = grads
            for key in path.split("."):
                node = node[int(key) if key.isdigit() else key]
            g = np.asarray(node["kernel"][...]).T
            if node.get("bias") is not None:
                g = np.concatenate([g, np.asarray(node["bias"][...])[:, None]], axis=1)
            out[path].append(g)
    return {path: np.stack(g) for path, g in out.items()}


@pytest.mark.parametrize("fixture", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_no_bos_no_eos_matches_an_independent_float64_reference(fixture):
    name, specials, template = fixture
    tokenizer = word_tokenizer(specials, template)
    info = conventions(tokenizer, section(add_bos=False, add_eos=False))
    model = load_hf(FIXTURES / name, ConvertArgs(dtype="float64"))
    records = [Record(str(i), "web", t) for i, t in enumerate(TEXTS)]
    corpus, _ = tokenize_corpus(records, tokenizer, TokenizeArgs(max_length=16), info)
    docs = [tokenizer.encode(t, add_special_tokens=False).ids for t in TEXTS]
    assert [corpus.tokens[i, : corpus.lengths[i]].tolist() for i in range(len(docs))] == docs
    layers = select_layers(model, (r".*mlp.*",))
    mesh = make_mesh(devices=jax.devices()[:1])

    # EK-FAC eigenvalues: mean over documents of (Q_Sᵀ G Q_A)², G from the reference.
    args = FactorArgs(fisher="empirical")
    batches = list(row_batches(corpus, np.arange(len(docs)), 4))
    factors = fit_factors(model, layers, batches, args, Placement(mesh))
    reference = reference_gradients(model, docs, [1] * len(docs), layers)
    for path in layers:
        f = factors[path]
        rotated = np.einsum("so,noi,ia->nsa", f.s_eigvecs.T, reference[path], f.a_eigvecs)
        np.testing.assert_allclose(f.lambdas, np.mean(rotated**2, axis=0), rtol=RTOL, atol=1e-14)
        diagonal = np.mean(reference[path] ** 2, axis=0)
        np.testing.assert_allclose(f.diagonal, diagonal, rtol=RTOL, atol=1e-14)

    # Gradient dot products of queries measured without BOS against the documents.
    queries = [QueryText("q0", "w1 w2", "w3 w4"), QueryText("q1", "w5", "w6")]
    tokens = encode_queries(queries, tokenizer, info, 16)
    influence = InfluenceArgs(tuple(layers), strategy="identity", query_grads=QueryArgs(rank=0))
    scores = influence_scores(model, corpus, tokens, influence, Placement(mesh))
    rows = [tokens.tokens[i, : tokens.lengths[i]] for i in range(2)]
    grads_q = reference_gradients(model, rows, tokens.prompt_lengths, layers)
    # DESIGN §2: effects on log-probability; up-weighting document d moves the parameters by
    # -H⁻¹∇nll_d, so the score is +∇nll_q · H⁻¹ ∇nll_d (H = I here).
    expected = sum(np.einsum("qoi,noi->qn", grads_q[p], reference[p]) for p in layers)
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-9)
