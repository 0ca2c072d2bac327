"""summary.json: the schema the report and users rely on, and the planted answers."""

import json

import numpy as np
import pytest

from tests.analysis.synthetic import LAYER_SHARES

FAMILIES = ("factual", "arithmetic", "slope", "factual_control", "reasoning_control")


def _no_nan(token):
    raise ValueError(f"summary.json holds {token}, which is not JSON")


@pytest.fixture(scope="module")
def summary(analysed_workdir):
    text = (analysed_workdir / "analysis" / "summary.json").read_text()
    return json.loads(text, parse_constant=_no_nan)


def test_required_keys(summary, study):
    assert summary["setup"]["models"] == ["small", "large"]  # smaller model first
    for name in ("small", "large"):
        m = summary["models"][name]
        assert m["num_queries"] == len(study.queries)
        assert m["num_documents"] == len(study.documents)
        assert m["family_order"] == list(FAMILIES)
        assert set(m["correlation"]["within_family"]) == set(FAMILIES)
        assert isinstance(m["correlation"]["between_families"], float)
        assert m["answer_in_top_k"]["k"] == 5
        assert all(f in m["answer_in_top_k"] for f in FAMILIES)
        for k in ("3", "10", "30"):
            for family in FAMILIES:
                assert set(m["source_ratio"]["top"][k][family]) == set(m["source_ratio"]["sources"])
                assert set(m["source_ratio"]["bottom"][k][family]) == set(
                    m["source_ratio"]["sources"]
                )
        assert 0 <= m["ground_truth"]["fact_recall_at_10"] <= 1
        assert len(m["queries"]) == len(study.queries)
        assert len(m["queries"]["fact-0"]["top_documents"]) == 3
    pair = summary["cross_model"]["small__large"]
    assert pair["num_shared"] == len(study.queries)
    assert -1 <= pair["mean_correlation"] <= 1
    assert pair["magnitude_ratio"]["direction"] == "large / small"


def test_planted_structure_is_found(summary, study):
    for name in ("small", "large"):
        m = summary["models"][name]
        within = m["correlation"]["within_family"]
        assert within["arithmetic"] > 0.5 and within["slope"] > 0.5
        assert abs(within["factual"]) < 0.1 and abs(m["correlation"]["between_families"]) < 0.2
        truth = m["ground_truth"]
        assert truth["fact_recall_at_1"] == 1.0 and truth["fact_median_rank"] == 1
        for family in ("arithmetic", "slope"):
            assert truth["reasoning"][family]["answer_docs"]["recall_at_1"] == 1.0
            assert truth["reasoning"][family]["worked_docs"]["median_rank"] == 2
            ratios = m["source_ratio"]["top"]["10"][family]
            assert ratios["stackexchange"] > 1.5 and ratios["code"] > 1.0 and ratios["web"] < 1
        assert m["answer_in_top_k"]["factual"] == 1.0
        assert m["categories"]["source"] == "ground truth"
        assert m["conventions"]["ranking"] == "score / doc_grad_norm"


def test_rankings_use_the_normalised_score(summary, study):
    doc = {d.doc_id: i for i, d in enumerate(study.documents)}
    for q, query in enumerate(study.queries):
        shown = summary["models"]["small"]["queries"][query["id"]]["top_documents"]
        structure = study.structure["small"][q]
        expected = np.sort(structure)[::-1][:3]
        np.testing.assert_allclose([d["score"] for d in shown], expected, rtol=1e-5)
        for d in shown:
            assert d["raw_score"] == pytest.approx(
                float(study.scores["small"][q, doc[d["doc_id"]]]), rel=1e-6
            )


def test_per_layer_shares(summary):
    shares = summary["models"]["small"]["per_layer"]
    for family in FAMILIES:
        np.testing.assert_allclose(shares[family], LAYER_SHARES, rtol=1e-5)
    assert "per_layer" not in summary["models"]["large"]
