"""Analysis A: Pearson rows (chunked) against numpy, and planted family blocks."""

import numpy as np
import pytest

from infljax.analysis import correlation
from infljax.analysis.correlation import family_correlation, paired_pearson, pearson_rows
from infljax.analysis.families import FamilyIndex
from infljax.analysis.inputs import QueryRecord


def _query(i: int, family: str, steps=(), control=False) -> QueryRecord:
    return QueryRecord(f"q{i}", family, "", "", "1", tuple(steps), control)


def test_pearson_rows_equals_numpy_across_chunks(monkeypatch):
    monkeypatch.setattr(correlation, "_CHUNK", 7)  # many chunks, the last one partial
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 50)).astype(np.float32) + 100.0  # a large common offset
    y = rng.normal(size=(3, 50))
    np.testing.assert_allclose(pearson_rows(x), np.corrcoef(x), atol=1e-10)
    np.testing.assert_allclose(pearson_rows(x, y), np.corrcoef(x, y)[:4, 4:], atol=1e-10)
    np.testing.assert_allclose(paired_pearson(x[:3], y), np.diag(np.corrcoef(x[:3], y)[:3, 3:]))


def test_constant_rows_have_undefined_correlation():
    corr = pearson_rows(np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]]))
    assert np.isnan(corr[0, 1]) and corr[1, 1] == pytest.approx(1.0)


def test_planted_family_blocks_give_high_within_and_low_between():
    rng = np.random.default_rng(1)
    n = 20_000
    shared = {"slope": rng.normal(size=n), "arithmetic": rng.normal(size=n)}
    queries, rows = [], []
    for i in range(12):
        family = ("slope", "arithmetic", "factual")[i % 3]
        queries.append(_query(i, family, steps=("1",) if family != "factual" else ()))
        base = shared.get(family, 0.0)
        rows.append(3.0 * base + rng.normal(size=n))  # same-family correlation 9 / 10
    corr = pearson_rows(np.array(rows))
    fc = family_correlation(corr, FamilyIndex.of(queries))
    assert fc.within["slope"] == pytest.approx(0.9, abs=0.01)
    assert fc.within["arithmetic"] == pytest.approx(0.9, abs=0.01)
    assert abs(fc.within["factual"]) < 0.03 and abs(fc.between) < 0.03
    assert fc.family_matrix.shape == (3, 3)
    assert fc.within_max["slope"] >= fc.within["slope"]


def test_control_and_variant_means_are_the_hand_computed_pair_averages():
    queries = [
        QueryRecord("a", "slope", "", "", "1", ("1",), extra={"variant": "x"}),
        QueryRecord("b", "slope", "", "", "1", ("1",), extra={"variant": "x"}),
        QueryRecord("c", "slope", "", "", "1", ("1",), extra={"variant": "y"}),
        QueryRecord("d", "reasoning_control", "", "", "1", ("1",), control=True),
    ]
    corr = np.array(
        [[1.0, 0.8, 0.4, 0.1], [0.8, 1.0, 0.2, 0.3], [0.4, 0.2, 1.0, 0.5], [0.1, 0.3, 0.5, 1.0]]
    )
    index = FamilyIndex.of(queries)
    fc = family_correlation(corr, index, ["x", "x", "y", None])
    assert fc.within["slope"] == pytest.approx((0.8 + 0.4 + 0.2) / 3)
    assert fc.with_control == {"slope": pytest.approx((0.1 + 0.3 + 0.5) / 3)}
    assert fc.same_variant == {"slope": pytest.approx(0.8)}
    assert fc.other_variant == {"slope": pytest.approx(0.3)}
    assert fc.between == pytest.approx((0.1 + 0.3 + 0.5) / 3)
    assert np.isnan(fc.within["reasoning_control"])  # one query: no pair
