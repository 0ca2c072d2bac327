"""Analysis F: number-robust answer search and answer-in-top-k on planted documents."""

import numpy as np
import pytest

from infljax.analysis.answers import (
    answer_targets,
    contains,
    fraction,
    parse_number,
    search_answers,
)
from infljax.analysis.inputs import QueryRecord


@pytest.mark.parametrize(
    "text,target,expected",
    [
        ("it is 12,345 feet tall", "12345", True),  # thousands separator in the text
        ("it is 12345 feet tall", "12,345", True),  # ... or in the answer
        ("it is 12,345 feet tall", "345", False),  # part of a longer number
        ("it is 12,345 feet tall", "12", False),
        ("the result is 12.5", "12", False),  # a decimal is another number
        ("print(x)  # -43.0", "-43", True),  # a float printing of the integer
        ("the slope is −22", "-22", True),  # unicode minus
        ("m = -43.", "-43", True),
        ("m = -43.", "43", False),  # the number is negative
        ("19-43", "43", True),  # subtraction, not a sign
        ("19-43", "-43", False),
        ("y2 - y1 = 43", "-43", False),
        ("x1 = 5", "1", False),  # digits inside a name
        ("points (94, 62) and (95, 19)", "62", True),
        ("(7 - 4) * 7 = 21", "3", False),
        ("Mount Karo is tall", "mount  karo", True),  # case and spaces
        ("Karolina is tall", "Karo", False),  # word boundaries
        ("height: 8,848 m", "8,848 m", True),
    ],
)
def test_contains_is_robust_to_number_formatting(text, target, expected):
    assert contains(text, target) is expected


def test_parse_number():
    assert parse_number("12,345") == parse_number("12345") == 12345
    assert parse_number(" -7 ") == -7 and parse_number("+3") == 3
    assert parse_number("12 apples") is None and parse_number("1,23") is None


def test_targets_are_the_steps_and_the_answer_or_the_answer_alone():
    reasoning = QueryRecord("r", "slope", "", "", "-3", ("-6", "2", "-3"))
    assert answer_targets(reasoning) == ("-6", "2", "-3")
    assert answer_targets(QueryRecord("f", "factual", "", "", "Kesto")) == ("Kesto",)
    assert answer_targets(QueryRecord("n", "factual", "", "", " ")) == ()


def test_planted_answer_documents_at_the_top_are_found():
    texts = [
        "filler 1",
        "The capital of Velmo is Kesto.",  # factual answer
        "(7 - 4) * 7: first 3, then 21",  # every step in one document
        "bracket gives 3",
        "the product is 21",
        "nothing here",
    ]
    queries = [
        QueryRecord("f", "factual", "", "", "Kesto"),
        QueryRecord("r1", "arithmetic", "", "", "21", ("3", "21")),
        QueryRecord("r2", "arithmetic", "", "", "21", ("3", "21")),
        QueryRecord("none", "factual", "", "", ""),
    ]
    top = np.array([[1, 0], [0, 2], [3, 4], [0, 5]])
    result = search_answers(queries, top, texts)
    assert result.applicable.tolist() == [True, True, True, False]
    assert result.same_document.tolist()[:3] == [True, True, False]
    assert result.any_document.tolist()[:3] == [True, True, True]  # steps split over two docs
    assert result.first_rank.tolist() == [1, 2, 0, 0]
    assert fraction(result.same_document, [0, 1, 2, 3], result.applicable) == pytest.approx(2 / 3)
    assert fraction(result.same_document, [3], result.applicable) is None
