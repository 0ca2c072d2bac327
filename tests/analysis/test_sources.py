"""Analysis I: source over-representation, by hand and with a planted skew."""

import numpy as np
import pytest

from infljax.analysis.sources import log_grid, source_ratios


def test_ratio_is_share_in_top_k_over_share_in_corpus():
    sources = np.array(["code"] * 2 + ["web"] * 8)
    order = np.array([[0, 2, 1, 3, 4, 5, 6, 7, 8, 9]])  # top-2: code, web; top-4: 2 code, 2 web
    ratios = source_ratios(order, order[:, ::-1], sources, ks=(2, 4))
    assert ratios.sources == ("code", "web")
    np.testing.assert_allclose(ratios.corpus_share, [0.2, 0.8])
    np.testing.assert_allclose(
        ratios.top[:, 0, :], [[0.5 / 0.2, 0.5 / 0.8], [0.5 / 0.2, 0.5 / 0.8]]
    )
    np.testing.assert_allclose(ratios.bottom[:, 0, :], [[0.0, 1.25], [0.0, 1.25]])


def test_planted_skew_is_over_represented_and_family_means_average_queries():
    rng = np.random.default_rng(0)
    sources = np.array(rng.choice(["code", "wiki", "web"], size=3000, p=[0.1, 0.3, 0.6]))
    scores = rng.normal(size=(6, 3000)) + 3.0 * (sources == "code")
    order = np.argsort(-scores, axis=1)
    ratios = source_ratios(order, order[:, ::-1], sources, ks=(50, 500))
    mean = ratios.family_mean("top", range(6))
    code = ratios.sources.index("code")
    assert mean[0, code] > 5 and mean[1, code] > 3
    assert ratios.family_mean("bottom", range(6))[0, code] < 0.2
    assert mean[0] @ ratios.corpus_share == pytest.approx(1.0)  # shares sum to one


def test_log_grid_drops_ks_at_or_above_the_corpus_size():
    assert log_grid(100, (5, 50, 500, 100, 50)) == (5, 50)
    ratios = source_ratios(np.zeros((2, 1), int), np.zeros((2, 1), int), np.array(["a"]), ())
    assert ratios.top.shape == (0, 2, 1)
