"""Queries: the record, the family registry, the study's families and completions.

    from infljax.queries import FamilySpec, build_families, generate_queries

    specs = [FamilySpec("slope", "slope", 6, {"in_corpus_fraction": 0.5})]
    queries = generate_queries(specs, world, seed=0)   # ids slope-000 ... slope-005

Built-in families (`type`): factual, arithmetic, slope, linear, factual_control,
reasoning_control, jsonl; a family of your own is ``"package.module:Class"`` or
``"path/to/file.py:Class"`` (subclass `Family`).
"""

from infljax.queries import controls, factual, files, tasks  # noqa: F401  (register built-ins)
from infljax.queries.completions import CompletionArgs, QueriesArgs, generate_completions
from infljax.queries.grading import Grade, grade_completion, grade_number, grade_text
from infljax.queries.records import (
    Query,
    QueryFileError,
    Relevant,
    query_from_json,
    read_queries_jsonl,
    write_queries_jsonl,
)
from infljax.queries.registry import (
    Family,
    FamilyError,
    FamilySpec,
    QueryFamily,
    build_families,
    family_class,
    generate_queries,
    make_family,
    register,
    registered_families,
)

__all__ = [
    "CompletionArgs", "Family", "FamilyError", "FamilySpec", "Grade", "Query", "QueryFamily",
    "QueriesArgs", "QueryFileError", "Relevant", "build_families", "family_class",
    "generate_completions",
    "generate_queries", "grade_completion", "grade_number", "grade_text", "make_family",
    "query_from_json", "read_queries_jsonl", "register", "registered_families",
    "write_queries_jsonl",
]  # fmt: skip
