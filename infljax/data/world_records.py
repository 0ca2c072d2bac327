"""Ground-truth records of the procedural world (DESIGN.md §8): entities, facts, task instances
and documents.

They live apart from `world.py` so that the text renderers can use them without an import
cycle; import them from `infljax.data.world`.
"""

from __future__ import annotations

import dataclasses

TASKS = ("arithmetic", "slope", "linear")
SOURCES = ("wiki", "trivia", "code", "math", "stackexchange", "web")
# Facts every entity has, in fact-id order. A mountain's name and height are separate facts but
# are always stated together (a "topic"), so a query can ask for both.
ATTRIBUTES = ("capital", "mountain", "mountain_height", "river", "founder", "founded")
Topic = tuple[str, ...]
TOPICS: tuple[Topic, ...] = (
    ("capital",),
    ("mountain", "mountain_height"),
    ("river",),
    ("founder",),
    ("founded",),
)


@dataclasses.dataclass(frozen=True)
class Entity:
    """An invented place the facts are about; `kind` ("kingdom", "planet", ...) only shapes how
    documents introduce it, it is not a fact."""

    name: str
    kind: str


@dataclasses.dataclass(frozen=True)
class Fact:
    """One attribute value of one entity, e.g. ("f003", "Velmo", "capital", "Taro").

    `value` is the exact string every document that states the fact contains.
    """

    fact_id: str
    entity: str
    attribute: str
    value: str


@dataclasses.dataclass(frozen=True)
class Instance:
    """One problem of a reasoning task, with its worked solution.

    `operands`: arithmetic (a, b, c) of `(a op1 b) op2 c`; slope (x1, y1, x2, y2); linear (a, b, c)
    of `ax + b = c`. `operators` holds (op1, op2) for arithmetic and is empty otherwise.
    `expression` is the canonical string queries and documents quote ("(7 - 4) * 7",
    "(94, 62) and (95, 19)", "8x + 16 = 32"); `answer` and `steps` are integer strings, the last
    step being the answer. `in_corpus=False` instances are worked or answered by no document.
    """

    instance_id: str
    task: str
    operands: tuple[int, ...]
    expression: str
    answer: str
    steps: tuple[str, ...]
    in_corpus: bool
    operators: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Document:
    """One corpus document and what it is known to contain.

    `states`: fact ids whose entity and value the text states. `answers`: instance ids whose
    answer the text states without the procedure (planted answer documents). `works`: instance
    ids the text works through step by step (it contains every step). `procedure`: the task whose
    procedure the text implements or explains, else None.
    """

    doc_id: str
    source: str
    text: str
    states: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    works: tuple[str, ...] = ()
    procedure: str | None = None
