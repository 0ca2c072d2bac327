"""The report's query browser: each query's top (and bottom) documents, ready to render.

`browser_entries` pairs every query of a model with its best and most negative documents: id,
source, ranking and raw score, a text snippet, the ground-truth labels the document carries for
this query, and per-token influence when the scoring stage saved it (``per_token.json``: a list
of {query_id, doc_id, tokens: [str], scores: [float]}, per-token scores summing to the
document's score). Written to ``analysis/top_documents.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from infljax.analysis.categories import ground_truth_labels, has_ground_truth
from infljax.analysis.inputs import DocumentTable, QueryRecord
from infljax.analysis.ranking import ranks_of
from infljax.analysis.study import ModelAnalysis

# Byte-level BPE writes a leading space as "Ġ" and a newline as "Ċ"; show them as what they are.
_BYTE_LEVEL = {"\u0120": " ", "\u010a": "\n", "\u0109": "\t"}
_LABEL_NAMES = {
    "states_fact": "states the fact",
    "answers_instance": "planted answer",
    "works_instance": "works this instance",
    "procedure": "same procedure",
}


def display_token(token: str) -> str:
    """A token string as it reads in the text (byte-level BPE markers undone)."""
    return "".join(_BYTE_LEVEL.get(ch, ch) for ch in token)


def per_token_index(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict]:
    """(query_id, doc_id) -> {tokens, scores}; malformed records (lengths differ) are skipped."""
    index = {}
    for r in records:
        tokens, scores = r.get("tokens"), r.get("scores")
        if isinstance(tokens, list) and isinstance(scores, list) and len(tokens) == len(scores):
            index[(str(r.get("query_id")), str(r.get("doc_id")))] = {
                "tokens": [display_token(str(t)) for t in tokens],
                "scores": [float(s) for s in scores],
            }
    return index


def _labels(query: QueryRecord, table: DocumentTable, doc: int) -> list[str]:
    if not has_ground_truth([query], table):
        return []
    flags = ground_truth_labels(query, table, [doc])
    return [text for name, text in _LABEL_NAMES.items() if flags[name][0]]


def _document(
    m: ModelAnalysis, table: DocumentTable, q: int, doc: int, rank: int, tokens: dict
) -> dict[str, Any]:
    query = m.queries[q]
    text = table.texts[doc]
    limit = m.args.snippet_chars
    return {
        "rank": rank,
        "doc_id": table.doc_ids[doc],
        "source": str(table.sources[doc]),
        "score": float(m.ranking[q, doc]),
        "raw_score": float(m.raw_scores[q, doc]),
        "text": text if len(text) <= limit else text[:limit] + " …",
        "labels": _labels(query, table, doc),
        "per_token": tokens.get((query.id, table.doc_ids[doc])),
    }


def browser_entries(
    m: ModelAnalysis, table: DocumentTable, per_token: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """One entry per query: the query's fields, its shown top/bottom documents, and the other
    documents the scoring stage attributed per token (it picks them by raw score, so they can
    differ from the top documents of a normalised ranking)."""
    tokens = per_token_index(per_token)
    column = {doc_id: d for d, doc_id in enumerate(table.doc_ids)}
    n = m.num_documents
    entries = []
    for q, query in enumerate(m.queries):
        top = [int(d) for d in m.top[q, : m.args.top_documents]]
        bottom = [int(d) for d in m.bottom[q, : m.args.bottom_documents]]
        shown = set(top) | set(bottom)
        attributed = sorted(
            {column[d] for (qid, d) in tokens if qid == query.id and d in column} - shown,
            key=lambda d: -m.ranking[q, d],
        )
        ranks = ranks_of(m.ranking[q], np.asarray(attributed, dtype=np.int64))
        entries.append(
            {
                "id": query.id,
                "family": query.family,
                "prompt": query.prompt,
                "completion": query.completion,
                "answer": query.answer,
                "steps": list(query.steps),
                "correct": query.extra.get("correct"),
                "top": [_document(m, table, q, d, r + 1, tokens) for r, d in enumerate(top)],
                "bottom": [_document(m, table, q, d, n - r, tokens) for r, d in enumerate(bottom)],
                "attributed": [
                    _document(m, table, q, d, int(r), tokens)
                    for d, r in zip(attributed, ranks, strict=True)
                ],
            }
        )
    return entries
