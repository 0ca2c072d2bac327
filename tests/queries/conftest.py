"""Shared fixtures for the query tests: one small procedural world."""

import pytest

from infljax.data.world import World, WorldArgs, generate_world

# Big enough for 6 in-corpus and 6 held-out instances per task and 10 factual questions.
SMALL_WORLD = WorldArgs(
    seed=0,
    num_entities=10,
    fact_docs_per_fact=2,
    num_arithmetic=16,
    num_slope=16,
    num_linear=16,
    code_docs=40,
    math_docs=40,
    stackexchange_docs=40,
    web_docs=40,
)


@pytest.fixture(scope="session")
def world() -> World:
    return generate_world(SMALL_WORLD)
