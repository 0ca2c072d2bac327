"""The forced-choice fact probe: well-formed alternatives, a share for accuracy, exact chance."""

import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from infljax.data.tokenization import tokenizer_info, train_bpe
from infljax.models.decoder import Decoder, DecoderConfig
from infljax.queries.knowledge import choices, fact_knowledge
from tests.queries.test_families import one


def test_choices_swap_the_value_for_every_value_of_the_attribute(world):
    for query in one("factual", 8, world):
        options = choices(query, world)
        fact = world.fact(query.fact_ids[0])
        values = {f.value for f in world.facts if f.attribute == fact.attribute}
        assert options[0] == query.completion
        assert len(options) == len(values) == len(set(options))
        assert all(fact.value not in o for o in options[1:])


def test_controls_and_reasoning_queries_have_no_choices(world):
    for query in one("factual_control", 3, world) + one("slope", 3, world):
        assert choices(query, world) == []


def test_accuracy_is_a_share_and_chance_is_the_mean_inverse_choice_count(world):
    queries = one("factual", 4, world)
    tokenizer: Tokenizer = train_bpe([d.text for d in world.documents], vocab_size=300)
    cfg = DecoderConfig(vocab_size=tokenizer.get_vocab_size(), d_model=8, num_layers=1,
                        num_heads=2, d_ff=8, max_length=256)  # fmt: skip
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    known = fact_knowledge(model, tokenizer, tokenizer_info(tokenizer), world, queries)
    expected_chance = np.mean([1 / len(choices(q, world)) for q in queries])
    assert known.num_queries == 4
    assert known.accuracy in (0.0, 0.25, 0.5, 0.75, 1.0)
    np.testing.assert_allclose(known.chance, expected_chance)
