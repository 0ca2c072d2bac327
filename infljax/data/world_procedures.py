"""Text of the procedural documents: code, math and StackExchange documents that work a problem
step by step, and planted answer documents that state a result without the procedure.

Every procedure template contains each step of the problem (bracket value and result; rise, run
and slope; c - b and x), so a document rendered from one works the problem honestly. Planted
templates contain the expression and the answer only. Templates are `str.format` strings over
the fields of `_fields`; names of functions and variables are drawn at random so that no single
string identifies a task.
"""

from __future__ import annotations

import random

from infljax.data.world_records import Instance
from infljax.data.world_tasks import apply_operator

MONTHS = ("January", "March", "April", "June", "July", "September", "October", "November")
_OP_WORDS = {"-": "minus", "+": "plus", "*": "times"}

_ARITHMETIC_CODE = (
    "def {fn}({v1}, {v2}, {v3}):\n    {t} = {v1} {o1} {v2}\n    return {t} {o2} {v3}\n\n"
    "# {t} = {a} {o1} {b} = {inner}\nprint({fn}({a}, {b}, {c}))  # {ans}",
    "{v1}, {v2}, {v3} = {a}, {b}, {c}\n{t} = {v1} {o1} {v2}  # {inner}\n"
    "print({t} {o2} {v3})  # {ans}",
    "# evaluate {expr} step by step\n{t} = {a} {o1} {b}\nprint({t})  # {inner}\n"
    "print({t} {o2} {c})  # {ans}",
    ">>> {t} = {a} {o1} {b}\n>>> {t}\n{inner}\n>>> {t} {o2} {c}\n{ans}",
    "{fn} = lambda {v1}, {v2}, {v3}: ({v1} {o1} {v2}) {o2} {v3}\nassert {a} {o1} {b} == {inner}\n"
    "print({fn}({a}, {b}, {c}))  # prints {ans}",
)
_SLOPE_CODE = (
    "def {fn}({n1}, {n2}, {n3}, {n4}):\n    return ({n4} - {n2}) / ({n3} - {n1})\n\n"
    "# rise {y2} - {y1} = {dy}, run {x2} - {x1} = {dx}\n"
    "print({fn}({x1}, {y1}, {x2}, {y2}))  # {m}.0",
    "{n1}, {n2} = {x1}, {y1}\n{n3}, {n4} = {x2}, {y2}\n{r1} = {n4} - {n2}  # {dy}\n"
    "{r2} = {n3} - {n1}  # {dx}\nprint({r1} // {r2})  # {m}",
    'def {fn}(p, q):\n    """Slope of the line through points p and q."""\n'
    "    {r1} = q[1] - p[1]\n    {r2} = q[0] - p[0]\n    return {r1} // {r2}\n\n"
    "print({fn}({p1}, {p2}))  # {r1}={dy}, {r2}={dx} -> {m}",
    ">>> {r1} = {y2} - {y1}\n>>> {r2} = {x2} - {x1}\n>>> {r1}, {r2}\n({dy}, {dx})\n"
    ">>> {r1} // {r2}\n{m}",
)
_LINEAR_CODE = (
    'def {fn}({v1}, {v2}, {v3}):\n    """Solve {v1}*x + {v2} = {v3} for x."""\n'
    "    return ({v3} - {v2}) // {v1}\n\n# {c} - {b} = {rhs}\nprint({fn}({a}, {b}, {c}))  # {x}",
    "# {expr}\n{v1}, {v2}, {v3} = {a}, {b}, {c}\n{t} = {v3} - {v2}  # {rhs}\nx = {t} // {v1}\n"
    'print("x =", x)  # x = {x}',
    ">>> {c} - {b}\n{rhs}\n>>> {rhs} // {a}\n{x}\n>>> {a} * {x} + {b} == {c}\nTrue",
)
_ARITHMETIC_MATH = (
    "Evaluate {expr}. By the order of operations the {br} come first: {a} {o1} {b} = {inner}. "
    "Then {inner} {o2} {c} = {ans}. So {expr} = {ans}.",
    "Worked example. Compute {expr}.\nStep 1: {a} {o1} {b} = {inner}.\n"
    "Step 2: {inner} {o2} {c} = {ans}.\nAnswer: {ans}.",
    "{expr} = {inner} {o2} {c} = {ans}, since {a} {w1} {b} is {inner} and {inner} {w2} {c} "
    "is {ans}.",
    "Rule: in (a {o1} b) {o2} c, work out the {br} before the outer operation. Example: "
    "a = {a}, b = {b}, c = {c} gives {a} {o1} {b} = {inner} and {inner} {o2} {c} = {ans}.",
)
_SLOPE_MATH = (
    "For the points {p1} and {p2}, the slope is m = ({y_2} - {y_1})/({x_2} - {x_1}) = "
    "({y2} - {y1})/({x2} - {x1}) = {dy}/{dxp} = {m}.",
    "Gradient of the line through A{p1} and B{p2}: dy = {y2} - {y1} = {dy}, dx = {x2} - {x1} "
    "= {dx}, so m = dy/dx = {dy}/{dxp} = {m}.",
    "Rise over run. The rise is {y2} - {y1} = {dy} and the run is {x2} - {x1} = {dx}. "
    "Dividing gives a slope of {m} for the line through {p1} and {p2}.",
    "Definition: the slope of a line through two points is the change in y divided by the "
    "change in x. Through {p1} and {p2}: ({y2} - {y1}) / ({x2} - {x1}) = {dy} / {dxp} = {m}.",
)
_LINEAR_MATH = (
    "Solve {expr}. Subtract {b} from both sides: {a}x = {c} - {b} = {rhs}. Divide both sides "
    "by {a}: x = {rhs}/{a} = {x}.",
    "{expr}\n{a}x = {rhs}\nx = {rhs} / {a}\nx = {x}\nCheck: {a} * {x} + {b} = {c}.",
    "To isolate x in {expr}, move {b} to the right-hand side: {a}x = {c} - {b}, i.e. "
    "{a}x = {rhs}. Then x = {rhs}/{a}, so x = {x}.",
    "A linear equation ax + b = c has the solution x = (c - b)/a. For {expr}: "
    "x = ({c} - {b})/{a} = {rhs}/{a} = {x}.",
)
_ARITHMETIC_SE = (
    "Q: How do I evaluate {expr}? I keep getting the wrong answer.\nA: Do the {br} first: "
    "{a} {o1} {b} = {inner}. Then {inner} {o2} {c} = {ans}. The answer is {ans}.",
    "Title: Order of operations with {br}\nWhat is {expr}? My calculator and I disagree.\n"
    "Answer (score {votes}): Inside the {br}, {a} {o1} {b} gives {inner}. Now {inner} {o2} {c} "
    "= {ans}.",
    "Question: Is {expr} equal to {wrong}?\nAccepted answer: No. First {a} {w1} {b} is "
    "{inner}, then {inner} {w2} {c} is {ans}, so {expr} = {ans}.",
)
_SLOPE_SE = (
    "Q: How do I find the slope of the line through {p1} and {p2}?\nA: Use m = (y2 - y1)/"
    "(x2 - x1). Here y2 - y1 = {y2} - {y1} = {dy} and x2 - x1 = {x2} - {x1} = {dx}, so "
    "m = {dy}/{dxp} = {m}.",
    "Title: Slope between two points\nI have the points {p1} and {p2}. How steep is the line?\n"
    "Answer (score {votes}): The change in y is {dy}, the change in x is {dx}, so the slope is "
    "{dy} / {dxp} = {m}.",
    "Q: My textbook says the slope through {p1} and {p2} is {m}. How?\nA: Subtract the "
    "coordinates: {y2} - {y1} = {dy} and {x2} - {x1} = {dx}. Then divide: {dy}/{dxp} = {m}.",
)
_LINEAR_SE = (
    "Q: How do I solve {expr}?\nA: Subtract {b} from both sides: {a}x = {rhs}. Divide by {a}: "
    "x = {x}.",
    "Title: Solving a linear equation\nI need x in {expr}.\nAnswer (score {votes}): "
    "{a}x = {c} - {b} = {rhs}, so x = {rhs}/{a} = {x}. Check: {a} * {x} + {b} = {c}.",
    "Q: Why is x = {x} the solution of {expr}?\nA: Take {b} away from both sides to get "
    "{a}x = {rhs}, then divide by {a}: {rhs} / {a} = {x}.",
)
PROCEDURE_TEMPLATES = {
    "code": {"arithmetic": _ARITHMETIC_CODE, "slope": _SLOPE_CODE, "linear": _LINEAR_CODE},
    "math": {"arithmetic": _ARITHMETIC_MATH, "slope": _SLOPE_MATH, "linear": _LINEAR_MATH},
    "stackexchange": {"arithmetic": _ARITHMETIC_SE, "slope": _SLOPE_SE, "linear": _LINEAR_SE},
}
PLANTED_TEMPLATES = {
    "trivia": {
        "arithmetic": (
            "Q: What is {expr}? A: {ans}.",
            "Quick maths quiz, question {n}: {expr} = ? Answer: {ans}.",
            "Answer key, item {n}: {expr} = {ans}.",
        ),
        "slope": (
            "Q: What is the slope of the line passing through the points {expr}? A: {ans}.",
            "Answer key, item {n}: the slope of the line through {expr} is {ans}.",
        ),
        "linear": (
            "Q: Solve for x: {expr}. A: x = {ans}.",
            "Answer key, item {n}: {expr}, so x = {ans}.",
        ),
    },
    "web": {
        "arithmetic": (
            "{expr} = {ans}. Saved from my calculator history on {month} {day}.",
            "Homework thread reply: the answer to {expr} is {ans}. Hope that helps!",
        ),
        "slope": (
            "The slope of the line through {expr} is {ans}. Posted in the study group on "
            "{month} {day}.",
            "Homework thread reply: the line through {expr} has slope {ans}. Hope that helps!",
        ),
        "linear": (
            "The solution of {expr} is x = {ans}. Copied from the answer sheet on {month} {day}.",
            "Homework thread reply: {expr} gives x = {ans}. Hope that helps!",
        ),
    },
}


def render_procedure(rng: random.Random, source: str, problem: Instance) -> str:
    """A `source` ('code', 'math' or 'stackexchange') document working `problem` step by step."""
    template = rng.choice(PROCEDURE_TEMPLATES[source][problem.task])
    return template.format(**_fields(rng, problem))


def render_planted(rng: random.Random, source: str, problem: Instance) -> str:
    """A `source` ('trivia' or 'web') document stating `problem`'s answer without the steps."""
    template = rng.choice(PLANTED_TEMPLATES[source][problem.task])
    return template.format(**_fields(rng, problem))


def template_text() -> str:
    """All fixed template text, so that invented names can be kept out of it."""
    groups = [*PROCEDURE_TEMPLATES.values(), *PLANTED_TEMPLATES.values()]
    templates = [t for group in groups for task in group.values() for t in task]
    return "\n".join([*templates, *MONTHS, *_OP_WORDS.values(), *_all_names()])


_FUNCTION_NAMES = {
    "arithmetic": ("calc", "evaluate", "two_step", "compute", "bracket_first", "combine"),
    "slope": ("slope", "gradient", "rise_over_run", "get_slope", "compute_slope", "line_slope"),
    "linear": ("solve", "solve_linear", "find_x", "linear_root", "unknown"),
}
_TRIPLES = (("a", "b", "c"), ("x", "y", "z"), ("p", "q", "r"), ("n1", "n2", "n3"), ("u", "v", "w"))
_LINEAR_TRIPLES = (("a", "b", "c"), ("k", "d", "total"), ("coef", "const", "rhs"), ("m", "n", "s"))
_TEMPS = ("t", "tmp", "inner", "part", "first")
_POINT_NAMES = (
    ("x1", "y1", "x2", "y2"),
    ("ax", "ay", "bx", "by"),
    ("x_a", "y_a", "x_b", "y_b"),
    ("px", "py", "qx", "qy"),
)
_RISE_RUN = (("dy", "dx"), ("rise", "run"), ("delta_y", "delta_x"), ("num", "den"))
_NOTATIONS = (("x1", "y1", "x2", "y2"), ("x_1", "y_1", "x_2", "y_2"))


def _all_names() -> list[str]:
    tuples = [*_TRIPLES, *_LINEAR_TRIPLES, *_POINT_NAMES, *_RISE_RUN, *_NOTATIONS]
    names = [n for group in _FUNCTION_NAMES.values() for n in group]
    return [*names, *(n for names_ in tuples for n in names_), *_TEMPS]


def _fields(rng: random.Random, problem: Instance) -> dict[str, object]:
    """Format fields for `problem`'s templates: numbers, steps and randomly drawn names."""
    common = {
        "expr": problem.expression,
        "ans": problem.answer,
        "fn": rng.choice(_FUNCTION_NAMES[problem.task]),
        "t": rng.choice(_TEMPS),
        "n": rng.randint(1, 40),
        "votes": rng.randint(1, 90),
        "month": rng.choice(MONTHS),
        "day": rng.randint(1, 28),
    }
    return common | _TASK_FIELDS[problem.task](rng, problem)


def _arithmetic_fields(rng: random.Random, problem: Instance) -> dict[str, object]:
    a, b, c = problem.operands
    o1, o2 = problem.operators
    inner, ans = (int(s) for s in problem.steps)
    # A common mistake: applying the outer operation first (a o1 (b o2 c)).
    wrong = apply_operator(o1, a, apply_operator(o2, b, c))
    v1, v2, v3 = rng.choice(_TRIPLES)
    return {
        "a": a, "b": b, "c": c, "o1": o1, "o2": o2, "inner": inner,
        "w1": _OP_WORDS[o1], "w2": _OP_WORDS[o2], "v1": v1, "v2": v2, "v3": v3,
        "br": rng.choice(("brackets", "parentheses")),
        "wrong": wrong if wrong != ans else ans + 1,
    }  # fmt: skip


def _slope_fields(rng: random.Random, problem: Instance) -> dict[str, object]:
    x1, y1, x2, y2 = problem.operands
    dy, dx, m = (int(s) for s in problem.steps)
    n1, n2, n3, n4 = rng.choice(_POINT_NAMES)
    r1, r2 = rng.choice(_RISE_RUN)
    x_1, y_1, x_2, y_2 = rng.choice(_NOTATIONS)
    return {
        "x1": x1, "y1": y1, "x2": x2, "y2": y2, "dy": dy, "dx": dx, "m": m,
        "dxp": f"({dx})" if dx < 0 else str(dx), "p1": f"({x1}, {y1})", "p2": f"({x2}, {y2})",
        "n1": n1, "n2": n2, "n3": n3, "n4": n4, "r1": r1, "r2": r2,
        "x_1": x_1, "y_1": y_1, "x_2": x_2, "y_2": y_2,
    }  # fmt: skip


def _linear_fields(rng: random.Random, problem: Instance) -> dict[str, object]:
    a, b, c = problem.operands
    v1, v2, v3 = rng.choice(_LINEAR_TRIPLES)
    return {"a": a, "b": b, "c": c, "rhs": c - b, "x": problem.answer, "v1": v1, "v2": v2, "v3": v3}


_TASK_FIELDS = {"arithmetic": _arithmetic_fields, "slope": _slope_fields, "linear": _linear_fields}
