"""Analyses G/H: keyword labels and ground-truth shares of the top documents."""

import numpy as np
import pytest

from infljax.analysis.categories import CATEGORIES, category_shares, keyword_category
from infljax.analysis.inputs import DocumentTable, QueryRecord
from infljax.data.readers import Record


@pytest.mark.parametrize(
    "text,label",
    [
        ("def slope(p, q):\n    return (q[1] - p[1]) / (q[0] - p[0])", "code: slope"),
        ('def solve(a, b, c):\n    """Solve a*x + b = c."""\n    return (c - b) // a',
         "code: linear equation"),
        (">>> t = 7 - 4\n>>> t * 7\n21", "code: arithmetic"),
        ("num = y_b - y_a  # 22\nden = x_b - x_a  # -11\nprint(num // den)", "code: slope"),
        (">>> 69 - 29\n40\n>>> 40 // 10\n4\n>>> 10 * 4 + 29 == 69\nTrue", "code: linear equation"),
        ("import os\nprint(os.getcwd())", "code: other"),
        ("The slope is rise over run: (19 - 62) / (95 - 94) = -43.", "slope"),
        ("Solve for x: 8x + 16 = 32.", "linear equation"),
        ("Evaluate (7 - 4) * 7 = 21 by the order of operations.", "arithmetic"),
        ("The formula for the area of a circle.", "other maths"),
        ("The river Ost flows north.", "other"),
    ],
)  # fmt: skip
def test_keyword_labels(text, label):
    assert label in CATEGORIES
    assert keyword_category(text) == label


def _table() -> DocumentTable:
    rows = [
        ("wiki", "Velmo's capital is Kesto.", {"states": ["f1"]}),
        ("code", "def slope(p, q): return 1", {"procedure": "slope"}),
        ("web", "The answer to (1, 2) and (3, 8) is 3.", {"answers": ["s1"]}),
        ("stackexchange", "Q: slope? rise 6, run 2, slope 3",
         {"works": ["s1"], "procedure": "slope"}),
        ("math", "Evaluate (7 - 4) * 7 = 21.", {"procedure": "arithmetic"}),
        ("web", "The river Ost flows north.", {}),
    ]  # fmt: skip
    return DocumentTable.from_records(
        [Record(f"d{i}", s, t, e) for i, (s, t, e) in enumerate(rows)]
    )


def test_ground_truth_shares_are_the_hand_counted_fractions():
    table = _table()
    queries = [
        QueryRecord("s", "slope", "", "", "3", ("6", "2", "3"), extra={"instance_id": "s1"}),
        QueryRecord("f", "factual", "", "", "Kesto", extra={"fact_ids": ["f1"]}),
    ]
    top = np.array([[2, 3, 1, 4], [0, 5, 4, 1]])
    shares = category_shares(queries, top, table)
    truth = shares.ground_truth
    assert truth["procedure"].tolist() == [0.5, 0.0]  # docs 3 and 1 work "slope"
    assert truth["works_instance"].tolist() == [0.25, 0.0]
    assert truth["answers_instance"].tolist() == [0.25, 0.0]
    assert truth["states_fact"].tolist() == [0.0, 0.25]
    assert truth["any_procedure"].tolist() == [0.75, 0.5]
    assert shares.procedure[0] == 0.5 and np.isnan(shares.procedure[1])
    assert shares.procedure_base_rate[0] == pytest.approx(2 / 6)
    np.testing.assert_allclose(shares.keyword.sum(1), 1.0)


def test_without_ground_truth_the_procedure_share_comes_from_keyword_labels():
    table = _table()
    plain = DocumentTable.from_records(
        [
            Record(i, str(s), t)
            for i, s, t in zip(table.doc_ids, table.sources, table.texts, strict=True)
        ]
    )
    query = QueryRecord("s", "slope", "", "", "3", ("6", "2", "3"))
    shares = category_shares([query], np.array([[1, 3, 4, 5]]), plain)
    assert shares.ground_truth == {}
    # doc 1 is "code: slope", doc 3 "slope", doc 4 "arithmetic", doc 5 "other"
    assert shares.procedure[0] == pytest.approx(0.5)


def test_a_query_can_list_its_relevant_documents_itself():
    table = _table()
    query = QueryRecord("f", "factual", "", "", "x", extra={"relevant": {"states": ["d5"]}})
    shares = category_shares([query], np.array([[5, 0]]), table)
    assert shares.ground_truth["states_fact"].tolist() == [0.5]
