"""The report's query browser: shown documents, labels and per-token attributions."""

import numpy as np
import pytest

from infljax.analysis.browser import browser_entries, display_token, per_token_index
from infljax.analysis.inputs import DocumentTable, ModelScores, QueryRecord
from infljax.analysis.report import _highlighted
from infljax.analysis.study import AnalysisArgs, analyse_model


@pytest.fixture(scope="module")
def analysed(study):
    table = DocumentTable.from_records(study.documents)
    scores = ModelScores(
        "small",
        study.scores["small"],
        study.nats["small"],
        study.norms["small"],
        tuple(QueryRecord.from_json(q, "test") for q in study.queries),
    )
    args = AnalysisArgs(answer_k=5, procedure_k=5, source_ks=(10,), top_documents=3)
    return analyse_model(scores, table, args), table


def test_entries_show_top_and_bottom_documents_with_ground_truth_labels(analysed, study):
    m, table = analysed
    entries = browser_entries(m, table)
    assert [e["id"] for e in entries] == [q["id"] for q in study.queries]
    fact = entries[0]
    assert [d["rank"] for d in fact["top"]] == [1, 2, 3]
    assert [d["rank"] for d in fact["bottom"]] == [len(study.documents), len(study.documents) - 1]
    assert fact["top"][0]["labels"] == ["states the fact"]
    scores = [d["score"] for d in fact["top"]]
    assert scores == sorted(scores, reverse=True)
    assert fact["attributed"] == []


def test_per_token_records_attach_to_shown_documents_or_are_listed_apart(analysed):
    m, table = analysed
    top_doc = table.doc_ids[int(m.top[0, 0])]
    low_doc = table.doc_ids[int(np.argsort(-m.ranking[0])[20])]  # ranked 21st: not shown
    records = [
        {
            "query_id": "fact-0",
            "doc_id": top_doc,
            "tokens": ["\u0120a", "b"],
            "scores": [1.0, -0.5],
        },
        {"query_id": "fact-0", "doc_id": low_doc, "tokens": ["c"], "scores": [0.25]},
        {"query_id": "fact-0", "doc_id": "d0000", "tokens": ["x", "y"], "scores": [1.0]},  # bad
    ]
    entry = browser_entries(m, table, records)[0]
    assert entry["top"][0]["per_token"] == {"tokens": [" a", "b"], "scores": [1.0, -0.5]}
    assert [(d["doc_id"], d["rank"]) for d in entry["attributed"]] == [(low_doc, 21)]
    assert len(per_token_index(records)) == 2  # the malformed record is skipped


def test_highlights_shade_each_token_by_its_score():
    html = _highlighted({"tokens": ["<b>", " x"], "scores": [2.0, -1.0]})
    assert html.count("<span") == 2 and "&lt;b&gt;" in html
    assert "rgba(0,150,0,0.75)" in html and "rgba(220,0,0,0.38)" in html
    assert display_token("\u0120hello\u010a") == " hello\n"
    assert np.isclose(float(html.split("title='")[1].split("'")[0]), 2.0)
