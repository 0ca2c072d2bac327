"""Analysis F: does a query's answer (factual) or every step's result (reasoning) appear in its
top-k documents?

Numbers are compared by value, not by spelling: "12,345", "12345" and "12345.0" are one number;
"-43" is negative only when the minus is a sign ("= -43"), not a subtraction ("19-43", "x - 43");
digits inside words or longer numbers ("x1", "123", "12.5") are not matches. Other targets are
matched case-insensitively on word boundaries, with thousands separators removed on both sides.

STUDY.md reports answers in the top 500 for 55% / 30% of correctly answered factual queries
(7B / 35B) and 7% / 0% of reasoning queries.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from functools import lru_cache

import numpy as np

from infljax.analysis.inputs import QueryRecord

_MINUS = "-\u2212\u2013"  # hyphen-minus, minus sign, en dash
# A number in running text: optional sign attached to the digits, thousands groups or plain
# digits, optional decimals; never preceded by a word character or a decimal point.
_NUMBER_IN_TEXT = re.compile(
    rf"(?<![\w.])([{_MINUS}]?)(\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.(\d+))?(?!\d)"
)
_WHOLE_NUMBER = re.compile(rf"^\s*([{_MINUS}+]?)\s*(\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.(\d+))?\s*$")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def parse_number(value: str) -> Decimal | None:
    """The value of a string that is exactly one number ("12,345", "-22", "3.50"), else None."""
    match = _WHOLE_NUMBER.match(value)
    if not match:
        return None
    return _to_decimal(*match.groups())


def _to_decimal(sign: str, digits: str, fraction: str | None) -> Decimal | None:
    text = ("-" if sign and sign in _MINUS else "") + digits.replace(",", "")
    try:
        return Decimal(text + (f".{fraction}" if fraction else ""))
    except InvalidOperation:
        return None


@lru_cache(maxsize=1 << 16)
def numbers_in(text: str) -> frozenset[Decimal]:
    """Every number value written in `text` (see the module docstring for what counts)."""
    found = (_to_decimal(*m.groups()) for m in _NUMBER_IN_TEXT.finditer(text))
    return frozenset(v.normalize() for v in found if v is not None)


def contains(text: str, target: str) -> bool:
    """Whether `text` states `target`: by value for a number, else as a whole phrase."""
    number = parse_number(target)
    if number is not None:
        return number.normalize() in numbers_in(text)
    phrase = " ".join(_THOUSANDS.sub("", target).split())
    if not phrase:
        return False
    body = r"\s+".join(re.escape(word) for word in phrase.split())
    pattern = rf"(?<!\w){body}(?!\w)"
    return re.search(pattern, _THOUSANDS.sub("", text), flags=re.IGNORECASE) is not None


def answer_targets(query: QueryRecord) -> tuple[str, ...]:
    """What must be found: every step's result and the answer for a query with steps, else the
    answer alone (empty when the query has none)."""
    targets = [*query.steps, query.answer] if query.steps else [query.answer]
    return tuple(dict.fromkeys(t.strip() for t in targets if t.strip()))


@dataclasses.dataclass(frozen=True, eq=False)
class AnswerSearch:
    """Per query ([Q] each): `applicable` (has targets), `same_document` (one top-k document
    states every target), `any_document` (every target is stated by some top-k document),
    `first_rank` (1-based rank of the first top-k document stating every target, 0 if none)."""

    k: int
    applicable: np.ndarray
    same_document: np.ndarray
    any_document: np.ndarray
    first_rank: np.ndarray


def search_answers(
    queries: Sequence[QueryRecord], top: np.ndarray, texts: Sequence[str]
) -> AnswerSearch:
    """Search each query's top documents (`top` [Q, k] column indices, best first)."""
    q = len(queries)
    applicable, same, anywhere = np.zeros(q, bool), np.zeros(q, bool), np.zeros(q, bool)
    first = np.zeros(q, np.int64)
    for i, query in enumerate(queries):
        targets = answer_targets(query)
        if not targets:
            continue
        applicable[i] = True
        hits = np.array([[contains(texts[d], t) for t in targets] for d in top[i]])
        full = hits.all(axis=1)
        same[i] = full.any()
        anywhere[i] = hits.any(axis=0).all()
        first[i] = int(np.argmax(full)) + 1 if full.any() else 0
    return AnswerSearch(top.shape[1], applicable, same, anywhere, first)


def fraction(flags: np.ndarray, rows: Sequence[int], applicable: np.ndarray) -> float | None:
    """Mean of `flags` over the applicable `rows` (None when none applies)."""
    chosen = [r for r in rows if applicable[r]]
    return float(np.mean(flags[chosen])) if chosen else None
