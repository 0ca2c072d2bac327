"""Reading answers out of generated completions and marking them right or wrong."""

import pytest

from infljax.queries import Query, grade_number, grade_text
from infljax.queries.grading import parse_int

PATTERN = r"answer is:?\s*(?P<answer>{number})"


@pytest.mark.parametrize(
    "completion, expected, found, correct",
    [
        ("\nFirst 7 - 4 = 3.\nThe answer is 21. Then 5 more", "21", "21", True),
        ("\nThe answer is -43.\nThe answer is 7.", "-43", "-43", True),  # the first statement
        ("\nm = (19 - 62) / (95 - 94) = -43 / 1 = -43", "-43", "-43", True),  # last number
        ("\nThe answer is 12,345 feet", "12345", "12345", True),
        ("\nThe answer is 20.", "21", "20", False),
        ("\n19-43 is it", "-43", "43", False),  # a subtraction, not a sign
        ("\nno numbers here", "3", None, False),
        ("\nx1 = 2.5", "2", None, False),  # digits inside a word or a decimal are not answers
    ],
)
def test_grade_number(completion, expected, found, correct):
    grade = grade_number(completion, expected, PATTERN)
    assert (grade.model_answer, grade.correct) == (found, correct)


def test_grade_text_uses_the_first_line_and_every_part():
    parts = ("Venla", "17214")
    assert grade_text(" Venla, 17,214 feet.\nTaro.", parts).correct
    assert not grade_text(" Venla.\nIt is 17214 feet.", parts).correct  # height not on line 1
    assert not grade_text(" Venlas, 17214", parts).correct  # whole words only
    assert grade_text("\n\n  taro.", ("Taro",)).model_answer == "taro."
    assert grade_text("", ("Taro",)).correct is False
    assert grade_text(" anything", ("",)).correct is None


def test_families_grade_their_own_answers():
    from infljax.queries.controls import ReasoningControl
    from infljax.queries.factual import Factual
    from infljax.queries.tasks import Slope

    slope = Query("s", "slope", "p", "c", answer="-4", steps=("8", "-2", "-4"))
    assert Slope().grade(slope, "\nSo m = 8 / (-2) = -4.\nThe answer is -4.").correct
    control = Query("r", "reasoning_control", "p", "c", answer="74")
    assert ReasoningControl().grade(control, " The number between the brackets is 74.").correct
    fact = Query("f", "factual", "p", "c", answer="Venla", steps=("Venla", "17214"))
    assert not Factual().grade(fact, " Venla.").correct


def test_parse_int():
    assert [parse_int(s) for s in ("-43", "12,345", "\u221222", " 7 ")] == [-43, 12345, -22, 7]
    assert [parse_int(s) for s in ("2.5", "1,23", "x", None)] == [None] * 4
