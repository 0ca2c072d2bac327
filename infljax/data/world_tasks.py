"""The three reasoning tasks of the procedural world: build and sample valid problems.

Ranges follow STUDY.md "Setup": two-step arithmetic `(a op1 b) op2 c` with operands 0-20 and
positive intermediate and final results; slopes between points with coordinates 0-100 and an
integer, non-zero slope; linear equations `ax + b = c` with coefficients 0-100 and a positive
integer solution. The same constructors build the world's instances and the random problems that
procedure documents work, so both always satisfy the same invariants.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from infljax.data.world_records import Instance

OPERAND_MAX = 20
COORD_MAX = 100
COEFF_MAX = 100
# (op1, op2) pairs of `(a op1 b) op2 c`; the study's example is (7 - 4) * 7.
ARITHMETIC_OPERATORS = (("-", "*"), ("+", "*"), ("+", "-"), ("-", "+"))
_APPLY = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
# Largest |x2 - x1| of a sampled slope problem; small runs leave room for steep integer slopes.
_MAX_RUN = 12
# x is drawn first, then a, so that solutions are not mostly 1 (c = a*x + b <= 100).
_MAX_LINEAR_X = 10
_MAX_LINEAR_A = 30


def apply_operator(operator: str, x: int, y: int) -> int:
    """`x operator y` for operator "+", "-" or "*"."""
    return _APPLY[operator](x, y)


def make_arithmetic(
    a: int,
    b: int,
    c: int,
    operators: tuple[str, str],
    instance_id: str = "",
    in_corpus: bool = False,
) -> Instance:
    """`(a op1 b) op2 c`; steps are the bracket's value, then the result."""
    op1, op2 = operators
    inner = _APPLY[op1](a, b)
    result = _APPLY[op2](inner, c)
    return Instance(
        instance_id=instance_id,
        task="arithmetic",
        operands=(a, b, c),
        expression=f"({a} {op1} {b}) {op2} {c}",
        answer=str(result),
        steps=(str(inner), str(result)),
        in_corpus=in_corpus,
        operators=(op1, op2),
    )


def make_slope(
    x1: int, y1: int, x2: int, y2: int, instance_id: str = "", in_corpus: bool = False
) -> Instance:
    """Slope of the line through (x1, y1) and (x2, y2); steps are rise, run, slope."""
    rise, run = y2 - y1, x2 - x1
    if run == 0 or rise % run:
        raise ValueError(f"slope through ({x1}, {y1}) and ({x2}, {y2}) is not an integer")
    return Instance(
        instance_id=instance_id,
        task="slope",
        operands=(x1, y1, x2, y2),
        expression=f"({x1}, {y1}) and ({x2}, {y2})",
        answer=str(rise // run),
        steps=(str(rise), str(run), str(rise // run)),
        in_corpus=in_corpus,
    )


def make_linear(a: int, b: int, c: int, instance_id: str = "", in_corpus: bool = False) -> Instance:
    """`ax + b = c`; steps are c - b, then x."""
    if a < 1 or (c - b) % a or (c - b) // a < 1:
        raise ValueError(f"{a}x + {b} = {c} has no positive integer solution")
    return Instance(
        instance_id=instance_id,
        task="linear",
        operands=(a, b, c),
        expression=f"{a}x + {b} = {c}",
        answer=str((c - b) // a),
        steps=(str(c - b), str((c - b) // a)),
        in_corpus=in_corpus,
    )


def sample_arithmetic(rng: random.Random) -> Instance:
    """A random two-step expression whose bracket and result are both positive."""
    while True:
        a, b, c = (rng.randint(0, OPERAND_MAX) for _ in range(3))
        operators = rng.choice(ARITHMETIC_OPERATORS)
        problem = make_arithmetic(a, b, c, operators)
        if all(int(step) >= 1 for step in problem.steps):
            return problem


def sample_slope(rng: random.Random) -> Instance:
    """Random points with a non-zero integer slope, both inside [0, COORD_MAX]^2."""
    while True:
        x1 = rng.randint(0, COORD_MAX)
        x2 = x1 + rng.choice((-1, 1)) * rng.randint(1, _MAX_RUN)
        if 0 <= x2 <= COORD_MAX:
            break
    run = x2 - x1
    steepest = COORD_MAX // abs(run)
    slope = rng.choice([m for m in range(-steepest, steepest + 1) if m])
    rise = slope * run
    y1 = rng.randint(max(0, -rise), min(COORD_MAX, COORD_MAX - rise))
    return make_slope(x1, y1, x2, y1 + rise)


def sample_linear(rng: random.Random) -> Instance:
    """`ax + b = c` with 2 <= a, 1 <= b, c <= COEFF_MAX and a positive integer x (1-10, uniform).

    a = 1 and b = 0 are left out: "x + 5 = 9" and "8x + 0 = 32" are not how the study writes them.
    """
    x = rng.randint(1, _MAX_LINEAR_X)
    a = rng.randint(2, min(_MAX_LINEAR_A, (COEFF_MAX - 1) // x))
    b = rng.randint(1, COEFF_MAX - a * x)
    return make_linear(a, b, a * x + b)


SAMPLERS: dict[str, Callable[[random.Random], Instance]] = {
    "arithmetic": sample_arithmetic,
    "slope": sample_slope,
    "linear": sample_linear,
}


def problem_keys(problem: Instance) -> tuple[str, ...]:
    """Strings identifying the problem itself: its expression, and for a slope the same two
    points in the other order (the same line, so the same problem)."""
    if problem.task == "slope":
        x1, y1, x2, y2 = problem.operands
        return (problem.expression, f"({x2}, {y2}) and ({x1}, {y1})")
    return (problem.expression,)
