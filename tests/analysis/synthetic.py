"""A synthetic study whose analysis results are known by construction.

`synthetic_study(seed)` builds a small corpus with the procedural world's ground-truth labels,
queries of every built-in family, and score matrices for two models in which:

* every factual query's fact-stating documents score highest (ground-truth recall@1 = 1);
* every in-corpus reasoning query's planted answer document scores highest, then its worked
  document;
* queries of one reasoning family share a component (high within-family correlation) that
  favours `stackexchange` and `code` documents (over-represented sources);
* raw scores are the planted structure times the document-gradient norm, so only the
  normalised ranking recovers it exactly;
* the second model's structure is drawn independently (cross-model correlation ≈ 0).

`write_workdir(study, path)` lays it out as the workdir contract (DESIGN.md §4) describes;
`write_baselines(study, path)` adds baselines whose analyses are known (`baseline_scores`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from infljax.analysis.ranking import ranking_scores
from infljax.data.corpus import TokenizedCorpus, corpus_stats, save_corpus
from infljax.data.readers import Record

ENTITIES = ("Ardent", "Belmor", "Cyrrus", "Dovena", "Eskwith", "Fomalt", "Gryndel", "Hollin")
CAPITALS = ("Kesto", "Lumar", "Mirel", "Nodra", "Ospin", "Pravel", "Quorra", "Ristan")
ARITHMETIC = ((7, 4, 7), (9, 2, 3), (12, 5, 4), (15, 3, 2), (8, 6, 9), (11, 1, 6))
SLOPES = ((1, 2, 3, 8), (4, 10, 6, 4), (0, 50, 5, 75), (20, 20, 22, 28), (3, 9, 7, 1), (5, 5, 6, 9))
IN_CORPUS = 4  # the first four instances of each task have planted answer and worked documents
REASONING_SOURCES = ("stackexchange", "code")
FAMILY_STRENGTH = 3.0  # shared family component
PLANTED = 25.0  # boost of a query's planted documents, above everything else


@dataclasses.dataclass(frozen=True, eq=False)
class Study:
    documents: list[Record]
    queries: list[dict]
    scores: dict[str, np.ndarray]  # model -> [Q, N] raw
    norms: dict[str, np.ndarray]  # model -> [N]
    nats: dict[str, np.ndarray]  # model -> [Q]
    structure: dict[str, np.ndarray]  # model -> [Q, N] = raw / norms


def _arith(a, b, c):
    inner = a - b
    return f"({a} - {b}) * {c}", [str(inner), str(inner * c)]


def _slope(x1, y1, x2, y2):
    rise, run = y2 - y1, x2 - x1
    return f"({x1}, {y1}) and ({x2}, {y2})", [str(rise), str(run), str(rise // run)]


def _documents(rng: np.random.Generator) -> list[Record]:
    docs: list[tuple[str, str, dict]] = []

    def add(source: str, text: str, **truth) -> None:
        docs.append((source, text, truth))

    for i, (entity, capital) in enumerate(zip(ENTITIES, CAPITALS, strict=True)):
        add("wiki", f"{entity} is a small kingdom. Its capital is {capital}.", states=[f"f{i}"])
        add("trivia", f"Q: What is the capital of {entity}? A: {capital}.", states=[f"f{i}"])
    for task, problems, make in (("arithmetic", ARITHMETIC, _arith), ("slope", SLOPES, _slope)):
        for j, problem in enumerate(problems[:IN_CORPUS]):
            expression, steps = make(*problem)
            instance = f"{task}-{j}"
            add("web", f"The answer to {expression} is {steps[-1]}.", answers=[instance])
            worked = f"Q: {expression}? A: first {steps[0]}, " + ", then ".join(steps[1:]) + "."
            add("stackexchange", worked, works=[instance], procedure=task)
    for k in range(12):
        add(
            "code",
            f"def f(a, b):\n    return (a - b) * {k + 30}\nprint(f({k + 40}, 1))",
            procedure="arithmetic",
        )
        add(
            "code",
            f"def slope(p, q):\n    return (q[1] - p[1]) // (q[0] - p[0])  # {k + 40}",
            procedure="slope",
        )
    for k in range(16):
        add("math", f"Rise over run: the slope of the line is {k + 60}.", procedure="slope")
        add(
            "stackexchange",
            f"Q: how to evaluate {k + 50} - 3? A: {k + 47}.",
            procedure="arithmetic",
        )
    for k in range(110):
        add("web", f"Market day {k}: {int(rng.integers(100, 999))} visitors came.")
    order = rng.permutation(len(docs))
    empty = {"states": [], "answers": [], "works": [], "procedure": None}
    return [
        Record(f"d{i:04d}", docs[j][0], docs[j][1], {**empty, **docs[j][2]})
        for i, j in enumerate(order)
    ]  # fmt: skip


def _queries() -> list[dict]:
    queries = []
    for i, (entity, capital) in enumerate(zip(ENTITIES, CAPITALS, strict=True)):
        queries.append(
            {"id": f"fact-{i}", "family": "factual", "prompt": f"What is the capital of {entity}?",
             "completion": f" The capital is {capital}.", "answer": capital, "steps": [],
             "control": False, "fact_ids": [f"f{i}"]}
        )  # fmt: skip
    for task, problems, make in (("arithmetic", ARITHMETIC, _arith), ("slope", SLOPES, _slope)):
        for j, problem in enumerate(problems):
            expression, steps = make(*problem)
            queries.append(
                {"id": f"{task}-{j}", "family": task, "prompt": f"Calculate {expression}.",
                 "completion": " " + ", ".join(steps), "answer": steps[-1], "steps": steps,
                 "control": False, "task": task, "instance_id": f"{task}-{j}",
                 "variant": ("calculate", "story")[j % 2], "correct": j != 5}
            )  # fmt: skip
    for i in range(3):
        queries.append(
            {"id": f"fc-{i}", "family": "factual_control", "answer": "Wirtu", "steps": [],
             "prompt": "Zog's tallest mountain is Wirtu. What is it called?",
             "completion": " Wirtu.", "control": True}
        )  # fmt: skip
        queries.append(
            {"id": f"rc-{i}", "family": "reasoning_control", "answer": "21", "steps": ["21"],
             "prompt": "There are 21 kids in the bus. How many kids are in the bus?",
             "completion": " 21.", "control": True}
        )  # fmt: skip
    return queries


def _structure(
    rng: np.random.Generator, documents: list[Record], queries: list[dict]
) -> np.ndarray:
    """[Q, N] planted normalised scores (see the module docstring)."""
    n = len(documents)
    sources = np.array([d.source for d in documents])
    skew = np.isin(sources, REASONING_SOURCES).astype(np.float64)
    family_vectors = {
        f: rng.normal(size=n) + 2.0 * skew for f in ("arithmetic", "slope", "reasoning_control")
    }
    out = np.zeros((len(queries), n))
    for q, query in enumerate(queries):
        own = rng.normal(size=n)
        shared = family_vectors.get(query["family"])
        out[q] = own if shared is None else FAMILY_STRENGTH * shared + 0.3 * own
        for d, doc in enumerate(documents):
            if set(query.get("fact_ids", ())) & set(doc.extra["states"]):
                out[q, d] += PLANTED
            if query.get("instance_id") in doc.extra["answers"]:
                out[q, d] += 2 * PLANTED
            if query.get("instance_id") in doc.extra["works"]:
                out[q, d] += PLANTED
    return out


def synthetic_study(seed: int = 0) -> Study:
    rng = np.random.default_rng(seed)
    documents, queries = _documents(rng), _queries()
    scores, norms, nats, structure = {}, {}, {}, {}
    for name in ("small", "large"):
        structure[name] = _structure(rng, documents, queries)
        norms[name] = rng.uniform(0.5, 2.0, size=len(documents))
        scores[name] = (structure[name] * norms[name]).astype(np.float32)
        nats[name] = rng.uniform(2.0, 10.0, size=len(queries))
    return Study(documents, queries, scores, norms, nats, structure)


LAYER_SHARES = (0.25, 0.75)  # per_layer.npy of model "small": each layer a fixed share


def write_workdir(study: Study, workdir: Path, per_token: bool = True) -> Path:
    """The study laid out as a workdir (corpus/, queries.jsonl, scores/<m>/, models/<m>/);
    model "small" also gets per_layer.npy (LAYER_SHARES of its scores)."""
    workdir = Path(workdir)
    n = len(study.documents)
    corpus = TokenizedCorpus(
        tokens=np.ones((n, 4), np.int32), lengths=np.full(n, 3, np.int32), documents=study.documents
    )
    save_corpus(workdir / "corpus", corpus)
    (workdir / "corpus" / "stats.json").write_text(json.dumps(corpus_stats(corpus)))
    with open(workdir / "queries.jsonl", "w") as f:
        for query in study.queries:
            f.write(json.dumps(query) + "\n")
    for name, scores in study.scores.items():
        d = workdir / "scores" / name
        d.mkdir(parents=True)
        np.save(d / "scores.npy", scores)
        np.save(d / "query_nats.npy", study.nats[name])
        np.save(d / "doc_grad_norms.npy", study.norms[name])
        if name == "small":
            np.save(d / "per_layer.npy", np.stack([share * scores for share in LAYER_SHARES]))
        if per_token:
            (d / "per_token.json").write_text(json.dumps(_per_token(study, name)))
        m = workdir / "models" / name
        m.mkdir(parents=True)
        size = {"small": 1_000, "large": 5_000}.get(name, 2_000)
        metrics = {"final_held_out_loss": 2.0, "unigram_entropy": 4.0, "num_params": size}
        (m / "metrics.json").write_text(json.dumps({**metrics, "seconds": 12.0}))
    return workdir


CODE_FIRST_TASK = "arithmetic"  # baseline "code_first" ranks this task's code documents first


def baseline_scores(study: Study, name: str) -> dict[str, np.ndarray]:
    """[Q, N] scores of three baselines of model `name` whose analyses are known:

    * ``code_first``: the same ranking for every query — the code documents working
      CODE_FIRST_TASK, then the other code documents, then the rest in random order;
    * ``same``: the model's own ranking score (score ÷ norm), so every analysis equals the
      model's and its top documents overlap influence's completely;
    * ``random``: seeded Gaussian noise.
    """
    rng = np.random.default_rng(len(name))
    n, q = len(study.documents), len(study.queries)
    code = np.array([d.source == "code" for d in study.documents])
    task = np.array([d.extra["procedure"] == CODE_FIRST_TASK for d in study.documents])
    first = rng.uniform(0, 1, size=n) + 10.0 * code + 10.0 * (code & task)
    return {
        "code_first": np.tile(first, (q, 1)).astype(np.float32),
        "same": ranking_scores(study.scores[name], study.norms[name], normalise=True),
        "random": rng.normal(size=(q, n)).astype(np.float32),
    }


def write_baselines(study: Study, workdir: Path) -> Path:
    """`baseline_scores` of every model as ``baselines/<model>/<method>/`` (the layout of stage
    `baselines`: ranked by their own scores, so doc_grad_norms.npy is all ones); model "small"'s
    scores also record their strategy (``scores/small/args.json``: ekfac)."""
    workdir = Path(workdir)
    queries = (workdir / "queries.jsonl").read_text()
    for name in study.scores:
        for method, scores in baseline_scores(study, name).items():
            d = workdir / "baselines" / name / method
            d.mkdir(parents=True)
            np.save(d / "scores.npy", scores)
            np.save(d / "query_nats.npy", study.nats[name])
            np.save(d / "doc_grad_norms.npy", np.ones(scores.shape[1], np.float32))
            (d / "queries.jsonl").write_text(queries)
    record = {"args": {"args": {"strategy": "ekfac"}}}
    (workdir / "scores" / "small" / "args.json").write_text(json.dumps(record))
    return workdir


def _per_token(study: Study, name: str) -> list[dict]:
    """Per-token scores of each query's best document (words as tokens, summing to the score)."""
    records = []
    ranking = study.structure[name]
    for q, query in enumerate(study.queries):
        d = int(np.argmax(ranking[q]))
        words = study.documents[d].text.split(" ")
        tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
        weights = np.linspace(-0.5, 1.0, len(tokens))
        values = weights / weights.sum() * float(study.scores[name][q, d])
        records.append(
            {"query_id": query["id"], "doc_id": study.documents[d].doc_id, "tokens": tokens,
             "scores": values.tolist()}
        )  # fmt: skip
    return records
