"""Reading the answer out of a generated completion, and marking it right or wrong.

Numeric answers: the first match of the family's `answer_pattern` (a regex with a group named
``answer``, in which ``{number}`` stands for a signed integer, thousands separators allowed),
else the last number in the completion; compared by value ("12,345" is 12345; a minus counts as
a sign only when attached to the digits). Text answers: the completion's first non-empty line
must mention every expected part (case-insensitive, as whole words, thousands separators
ignored); the study graded factual answers the same way, by whether the answer was given.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from infljax.queries.records import Query

_MINUS = "-\u2212"
NUMBER = rf"[{_MINUS}]?(?:\d{{1,3}}(?:,\d{{3}})+|\d+)"
_ANY_NUMBER = re.compile(rf"(?<![\w.,]){NUMBER}(?!\d)(?![.,]\d)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


@dataclasses.dataclass(frozen=True)
class Grade:
    """`model_answer`: what the completion answers (None when nothing was found); `correct`:
    whether it is the expected answer (None when the query has no answer to compare)."""

    model_answer: str | None
    correct: bool | None


def parse_int(text: str | None) -> int | None:
    """The integer a string spells exactly ("-43", "12,345", "\u221222"), else None."""
    if text is None or not re.fullmatch(NUMBER, text.strip()):
        return None
    return int(text.strip().replace(",", "").replace("\u2212", "-"))


def grade_completion(query: Query, completion: str, pattern: str | None) -> Grade:
    """Numeric grading with `pattern` when the query's answer is an integer and a pattern is
    given, else text grading against the answer alone."""
    if pattern is not None and parse_int(query.answer) is not None:
        return grade_number(completion, query.answer, pattern)
    return grade_text(completion, (query.answer,))


def grade_number(completion: str, expected: str, pattern: str) -> Grade:
    """`pattern`'s first match (``{number}`` filled in), else the last number in `completion`."""
    match = re.search(pattern.replace("{number}", NUMBER), completion, flags=re.IGNORECASE)
    if match:
        found = match.group("answer")
    else:
        numbers = _ANY_NUMBER.findall(completion)
        found = numbers[-1] if numbers else None
    if found is None:
        return Grade(None, False)
    value = parse_int(found)
    return Grade(str(value), value == parse_int(expected))


def grade_text(completion: str, parts: Sequence[str]) -> Grade:
    """Whether the first non-empty line of `completion` mentions every non-empty part."""
    lines = [line.strip() for line in completion.splitlines() if line.strip()]
    first = lines[0] if lines else None
    parts = [p for p in parts if p.strip()]
    if not parts:
        return Grade(first, None)
    if first is None:
        return Grade(None, False)
    return Grade(first, all(mentions(first, part) for part in parts))


def mentions(text: str, phrase: str) -> bool:
    """`phrase` occurs in `text` as whole words, ignoring case and thousands separators."""
    words = _THOUSANDS.sub("", phrase).split()
    if not words:
        return False
    body = r"\s+".join(re.escape(w) for w in words)
    return re.search(rf"(?<!\w){body}(?!\w)", _THOUSANDS.sub("", text), re.IGNORECASE) is not None
