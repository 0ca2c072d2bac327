"""Does a model know the facts its factual queries ask? A forced choice among an attribute's values.

For each factual query about a world fact, the completion is rewritten with every value the
attribute takes in the world (all capitals, all rivers, ...); the model "knows" the fact when the
true completion has the lowest measurement (completion NLL). Chance is 1 / number of values.
Without this number, a retrieval result on tiny models cannot be read (DESIGN §8).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from infljax.data.tokenization import TokenizerInfo
from infljax.data.world import World
from infljax.influence.measurement import (
    QueryText,
    completion_batch,
    encode_queries,
    make_nats_fn,
)
from infljax.models.decoder import Decoder
from infljax.queries.records import Query


@dataclasses.dataclass(frozen=True)
class Knowledge:
    """accuracy: share of queries whose true completion wins; chance: its expected value."""

    accuracy: float
    chance: float
    num_queries: int


def choices(query: Query, world: World) -> list[str]:
    """The query's completion with its first fact's value swapped for each value of that
    attribute, the true completion first; empty when the query asks no world fact."""
    if not query.fact_ids or query.control:
        return []
    fact = world.fact(query.fact_ids[0])
    if fact.value not in query.completion:
        return []
    others = sorted({f.value for f in world.facts if f.attribute == fact.attribute} - {fact.value})
    return [query.completion] + [query.completion.replace(fact.value, v) for v in others]


def fact_knowledge(
    model: Decoder,
    tokenizer: Tokenizer,
    info: TokenizerInfo,
    world: World,
    queries: list[Query],
) -> Knowledge | None:
    """Forced-choice accuracy of `model` on the factual queries about world facts (None: none)."""
    graphdef, state = nnx.split(model)
    nats_fn = make_nats_fn(graphdef)
    wins, chance, count = 0, 0.0, 0
    for query in queries:
        options = choices(query, world)
        if len(options) < 2:
            continue
        texts = [QueryText(f"{query.id}/{i}", query.prompt, c) for i, c in enumerate(options)]
        tokens = encode_queries(texts, tokenizer, info, model.cfg.max_length)
        batch = completion_batch(tokens.tokens, tokens.prompt_lengths, tokens.lengths)
        nats = np.asarray(nats_fn(state, batch))
        wins += int(np.argmin(nats) == 0)
        chance += 1.0 / len(options)
        count += 1
    if not count:
        return None
    return Knowledge(accuracy=wins / count, chance=chance / count, num_queries=count)
