"""Ground-truth retrieval: ranks of the fact-stating, planted-answer and worked documents."""

import numpy as np
import pytest

from infljax.analysis.inputs import DocumentTable, QueryRecord
from infljax.analysis.retrieval import ground_truth_retrieval, rank_summary
from infljax.data.readers import Record


def _table() -> DocumentTable:
    extras = [
        {"states": ["f1"]},
        {},
        {"answers": ["a1"]},
        {"states": ["f1", "f2"]},
        {"works": ["a1"]},
        {"works": ["a1"]},
    ]
    return DocumentTable.from_records(
        [Record(f"d{i}", "web", "text", extra) for i, extra in enumerate(extras)]
    )


def test_ranks_of_planted_documents():
    queries = [
        QueryRecord("f1", "factual", "", "", "x", extra={"fact_ids": ["f1"]}),
        QueryRecord("f2", "factual", "", "", "x", extra={"fact_id": "f2"}),
        QueryRecord("a1", "arithmetic", "", "", "3", ("3",), extra={"instance_id": "a1"}),
        QueryRecord("none", "factual", "", "", "x"),
    ]
    ranking = np.array(
        [
            [0.1, 0.9, 0.0, 0.5, 0.2, 0.3],  # f1: doc 3 rank 2, doc 0 rank 6
            [0.1, 0.9, 0.0, 0.5, 0.2, 0.3],  # f2: doc 3 rank 2
            [0.1, 0.2, 0.3, 0.4, 0.9, 0.0],  # a1: answer doc 2 rank 3, worked 4 rank 1, 5 rank 6
            [0.0] * 6,
        ]
    )
    r = ground_truth_retrieval(queries, ranking, _table())
    assert r.fact_rank.tolist() == [2, 2, 0, 0] and r.fact_docs.tolist() == [2, 1, 0, 0]
    assert r.answer_rank.tolist() == [0, 0, 3, 0] and r.answer_docs.tolist() == [0, 0, 1, 0]
    assert r.worked_rank.tolist() == [0, 0, 1, 0]
    assert r.worked_ranks[2].tolist() == [1, 6]
    summary = rank_summary(r.fact_rank, r.fact_docs, [0, 1, 2, 3], r.num_documents)
    assert summary["num_queries"] == 2 and summary["median_rank"] == 2
    assert summary["recall_at_1"] == 0.0 and summary["recall_at_10"] == 1.0
    # chance of one of 2 (resp. 1) relevant documents at rank 1 of 6: 2/6 and 1/6
    assert summary["chance_recall_at_1"] == pytest.approx((2 / 6 + 1 / 6) / 2)
    assert rank_summary(r.fact_rank, r.fact_docs, [2, 3], 6) is None


def test_a_query_relevant_list_adds_documents():
    query = QueryRecord("q", "factual", "", "", "x", extra={"relevant": {"states": ["d1"]}})
    r = ground_truth_retrieval([query], np.array([[0.1, 0.9, 0.0, 0.5, 0.2, 0.3]]), _table())
    assert r.fact_rank.tolist() == [1]
