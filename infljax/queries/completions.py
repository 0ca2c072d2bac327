"""Completions: the family's template, or the studied model's own greedy generation.

The study measured the models' own chain-of-thought generations, wrong answers included; with
``mode="generated"`` each query is answered by each model (one record per model, ``model`` set),
its answer is extracted and graded by the query's family (`Family.grade`), and the completion is
cut at the first `stop` string. A model that generates nothing measurable (only whitespace or an
immediate EOS) keeps the template completion, recorded as ``generated=false, correct=false``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from flax import nnx
from tokenizers import Tokenizer

from infljax.data.tokenization import TokenizerInfo, text_only, tokenizer_info
from infljax.models.generate import GenerateArgs, greedy_generate
from infljax.queries.grading import Grade, grade_completion
from infljax.queries.records import Query
from infljax.queries.registry import Family, FamilySpec, QueryFamily

MODES = ("template", "generated")


@dataclasses.dataclass(frozen=True)
class CompletionArgs:
    """Attributes:
    mode: "template" (the family's reference chain of thought) or "generated".
    models: with "generated", the models that answer (empty: every model of the config).
    max_new_tokens, batch_size: greedy decoding (`infljax.models.generate.GenerateArgs`).
    stop: a generation is cut at the first of these strings (e.g. "\\n\\n").
    """

    mode: str = "template"
    models: tuple[str, ...] = ()
    max_new_tokens: int = 64
    batch_size: int = 8
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"completions.mode={self.mode!r}; valid: {MODES}")
        for name in ("models", "stop"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"completions.{name} must be a tuple of non-empty strings")
        GenerateArgs(self.max_new_tokens, self.batch_size)  # validates both

    @property
    def generate_args(self) -> GenerateArgs:
        return GenerateArgs(self.max_new_tokens, self.batch_size)


@dataclasses.dataclass(frozen=True)
class QueriesArgs:
    """``config.queries``: the query mix. seed: of every family's draws; families: label ->
    ``{"type": ..., "count": ..., **params}`` (`FamilySpec.from_config`); completions: how the
    completions are written."""

    seed: int = 0
    families: dict[str, dict] = dataclasses.field(default_factory=dict)
    completions: CompletionArgs = CompletionArgs()

    @property
    def specs(self) -> list[FamilySpec]:
        return [FamilySpec.from_config(k, v) for k, v in self.families.items()]


def generate_completions(
    queries: Sequence[Query],
    model: nnx.Module,
    tokenizer: Tokenizer,
    model_name: str,
    args: CompletionArgs,
    families: Mapping[str, QueryFamily] | None = None,
    format_prompt: Callable[[str], str] | None = None,
    info: TokenizerInfo | None = None,
) -> list[Query]:
    """Each query answered by `model`: ``BOS + tokens(format_prompt(prompt))`` decoded greedily
    (the measurement's prompt tokens), graded by the family in `families` (by family name) that
    made it, else by `grade_completion` with the default answer pattern."""
    info = tokenizer_info(tokenizer) if info is None else info
    encoder = text_only(tokenizer)
    format_prompt = format_prompt or (lambda prompt: prompt)
    prefix = [info.bos_id] if info.add_bos else []
    prompts = [
        prefix + encoder.encode(format_prompt(q.prompt), add_special_tokens=False).ids
        for q in queries
    ]
    generated = greedy_generate(model, prompts, info.eos_id, info.pad_id, args.generate_args)
    by_name = {family.name: family for family in (families or {}).values()}
    return [
        with_generation(query, cut(tokenizer.decode(ids), args.stop), model_name, by_name)
        for query, ids in zip(queries, generated, strict=True)
    ]


def cut(text: str, stop: Sequence[str]) -> str:
    """`text` up to (not including) the first occurrence of any `stop` string."""
    end = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:end]


def grade(query: Query, completion: str, families: Mapping[str, QueryFamily]) -> Grade:
    """`completion` graded by the family named `query.family`, else generically."""
    family = families.get(query.family)
    if family is not None:
        return family.grade(query, completion)
    return grade_completion(query, completion, Family.answer_pattern)


def with_generation(
    query: Query, completion: str, model_name: str, families: Mapping[str, QueryFamily]
) -> Query:
    """`query` with `model_name`'s generated `completion` and its grade."""
    if not completion.strip():
        return dataclasses.replace(query, model=model_name, correct=False, model_answer=None)
    result = grade(query, completion, families)
    return dataclasses.replace(
        query,
        completion=completion,
        generated=True,
        correct=result.correct,
        model_answer=result.model_answer,
        model=model_name,
    )
