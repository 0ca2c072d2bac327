"""Analyses G and H: what kind of documents a query's top-k are.

G (ground truth, the procedural world): the share of the top-k documents that work the query's
procedure (same task), work its very instance step by step, state its answer without the
procedure (planted answer documents), or state its fact. H (any corpus): rule-based keyword
labels of each top document — code computing a slope, similar arithmetic, linear equations,
other maths, ... — the labelling STUDY.md describes. Without ground truth, G's procedure share
falls back to the keyword labels of the query's task.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from infljax.analysis.families import query_task
from infljax.analysis.inputs import DocumentTable, QueryRecord

_CODE = re.compile(
    r"(^|\n)\s*(def |>>>|import |class )|print\(|\breturn\b|\blambda\b|==|//", re.IGNORECASE
)
_SLOPE = re.compile(
    r"\bslope\b|\bgradient\b|rise over run|\brise\b|\bdelta_y\b|\bdy\b"
    # a difference of y coordinates, then one of x coordinates: (y2 - y1) / (x2 - x1)
    r"|\b\w*y\w*\s*-\s*\w*y\w*\b[\s\S]{0,80}?\b\w*x\w*\s*-\s*\w*x\w*\b",
    re.I,
)
_LINEAR = re.compile(
    r"\d*\s*x\s*[+-]\s*\d+\s*=\s*\d+|solve for x|\bsolve\b|linear equation|isolate x"
    r"|\d+\s*\*\s*\d+\s*\+\s*\d+\s*==\s*\d+",  # checking a solution: a * x + b == c
    re.I,
)
_ARITHMETIC = re.compile(
    r"\(\s*\d+\s*[-+*]\s*\d+\s*\)\s*[-+*]\s*\d+|\d+\s*[-+*]\s*\d+\s*=\s*\d+|order of operations"
    r"|\b\d+\s*[-+*]\s*\d+\b",
    re.I,
)
_MATHS = re.compile(
    r"\d\s*[-+*/=]\s*\d|\b(equation|formula|theorem|divide|multiply|calculate|compute)\b", re.I
)
CATEGORIES = (
    "code: slope",
    "code: linear equation",
    "code: arithmetic",
    "code: other",
    "slope",
    "linear equation",
    "arithmetic",
    "other maths",
    "other",
)
TASK_CATEGORIES = {
    "slope": ("code: slope", "slope"),
    "linear": ("code: linear equation", "linear equation"),
    "arithmetic": ("code: arithmetic", "arithmetic"),
}
GROUND_TRUTH = ("procedure", "works_instance", "answers_instance", "states_fact", "any_procedure")


def keyword_category(text: str) -> str:
    """The first matching label of CATEGORIES (slope before linear before arithmetic)."""
    topic = "other"
    for name, pattern in (("slope", _SLOPE), ("linear equation", _LINEAR)):
        if pattern.search(text):
            topic = name
            break
    else:
        if _ARITHMETIC.search(text):
            topic = "arithmetic"
        elif _MATHS.search(text):
            topic = "other maths"
    if _CODE.search(text):
        return f"code: {topic}" if f"code: {topic}" in CATEGORIES else "code: other"
    return topic


def query_fact_ids(query: QueryRecord) -> frozenset[str]:
    """The fact ids a query asks about (``fact_id`` or ``fact_ids``), possibly none."""
    ids = query.extra.get("fact_ids") or (
        [query.extra["fact_id"]] if "fact_id" in query.extra else []
    )
    return frozenset(str(i) for i in ids if i is not None)


def query_instance_id(query: QueryRecord) -> str | None:
    value = query.extra.get("instance_id")
    return None if value is None else str(value)


def relevant_ids(query: QueryRecord, kind: str) -> frozenset[str]:
    """Doc ids the query's own ``relevant.<kind>`` lists (kind: states, answers, works)."""
    relevant = query.extra.get("relevant")
    if not isinstance(relevant, dict):
        return frozenset()
    return frozenset(str(d) for d in relevant.get(kind) or ())


def has_ground_truth(queries: Sequence[QueryRecord], table: DocumentTable) -> bool:
    """Whether documents carry world labels or queries list their relevant documents."""
    return table.has_ground_truth or any(isinstance(q.extra.get("relevant"), dict) for q in queries)


def ground_truth_labels(query: QueryRecord, table: DocumentTable, docs: Sequence[int]) -> dict:
    """name -> [len(docs)] bool: which of `docs` carry each GROUND_TRUTH label for `query`
    (from the documents' labels, or the query's own ``relevant`` lists)."""
    task, instance, facts = query_task(query), query_instance_id(query), query_fact_ids(query)
    listed = {kind: relevant_ids(query, kind) for kind in ("states", "answers", "works")}
    ids = [table.doc_ids[d] for d in docs]
    return {
        "procedure": np.array([task is not None and table.procedure[d] == task for d in docs]),
        "works_instance": np.array(
            [
                instance in table.works[d] or i in listed["works"]
                for d, i in zip(docs, ids, strict=True)
            ]
        ),
        "answers_instance": np.array(
            [
                instance in table.answers[d] or i in listed["answers"]
                for d, i in zip(docs, ids, strict=True)
            ]
        ),
        "states_fact": np.array(
            [
                bool(facts & table.states[d]) or i in listed["states"]
                for d, i in zip(docs, ids, strict=True)
            ]
        ),
        "any_procedure": np.array([table.procedure[d] is not None for d in docs]),
    }


@dataclasses.dataclass(frozen=True, eq=False)
class CategoryShares:
    """Shares of each query's top-k documents.

    Attributes:
      k: documents per query.
      keyword: [Q, len(CATEGORIES)] share of each keyword label.
      ground_truth: GROUND_TRUTH name -> [Q] share (empty without ground truth).
      procedure: [Q] share working the query's task (ground truth, else keyword labels; NaN for
        queries without a task).
      procedure_base_rate: [Q] the share of the whole corpus working the query's task (ground
        truth only; NaN otherwise): what `procedure` would be for a random ranking.
    """

    k: int
    keyword: np.ndarray
    ground_truth: dict[str, np.ndarray]
    procedure: np.ndarray
    procedure_base_rate: np.ndarray


def category_shares(
    queries: Sequence[QueryRecord], top: np.ndarray, table: DocumentTable
) -> CategoryShares:
    """G and H over `top` ([Q, k] column indices of each query's top documents)."""
    labels = {int(d): keyword_category(table.texts[d]) for d in np.unique(top)}
    keyword = np.array(
        [[np.mean([labels[int(d)] == c for d in row]) for c in CATEGORIES] for row in top]
    )
    truth: dict[str, np.ndarray] = {}
    if has_ground_truth(queries, table):
        per_query = [ground_truth_labels(q, table, top[i]) for i, q in enumerate(queries)]
        truth = {name: np.array([p[name].mean() for p in per_query]) for name in GROUND_TRUTH}
    procedure = np.array([_procedure_share(q, keyword[i], truth, i) for i, q in enumerate(queries)])
    counts = Counter(table.procedure) if table.has_ground_truth else {}
    base = np.array([_base_rate(query_task(q), counts, table.num_documents) for q in queries])
    return CategoryShares(top.shape[1], keyword, truth, procedure, base)


def _base_rate(task: str | None, counts: Counter | dict, num_documents: int) -> float:
    if task is None or not counts:
        return float("nan")
    return counts.get(task, 0) / num_documents


def _procedure_share(query: QueryRecord, keyword_row: np.ndarray, truth: dict, row: int) -> float:
    task = query_task(query)
    if task is None:
        return float("nan")
    if truth:
        return float(truth["procedure"][row])
    wanted = TASK_CATEGORIES.get(task, ())
    return float(sum(keyword_row[CATEGORIES.index(c)] for c in wanted))
