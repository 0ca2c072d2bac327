"""`report/index.html`: one self-contained page a researcher reads top to bottom.

The setup (models and how well they learned, corpus and its source mix, queries), a headline
table next to the study's numbers (STUDY.md), each analysis with its figures and a one-line
reading computed from `summary.json`, and a browser of every query's top documents with
per-token influence highlighted. Figures are embedded as base64 PNG; nothing is fetched.
`render_report` is pure: it turns `ReportInputs` into the HTML string.
"""

from __future__ import annotations

import base64
import dataclasses
import html
from collections.abc import Callable
from typing import Any

import numpy as np

from infljax.analysis import comparison, readings
from infljax.analysis.readings import fmt, pct


def figure_name(model: str, kind: str) -> str:
    """File name of a model's figure in ``analysis/``."""
    return f"{model}_{kind}.png"


def pair_figure_name(a: str, b: str) -> str:
    return f"cross_{a}__{b}.png"


@dataclasses.dataclass(frozen=True)
class ReportInputs:
    """What the page shows.

    Attributes:
      summary: the content of ``analysis/summary.json``.
      figures: PNG file name -> bytes (names from `figure_name` / `pair_figure_name`).
      browser: model -> entries of ``analysis/top_documents.json``.
      metrics: model -> its ``models/<name>/metrics.json`` (may be empty).
      corpus_stats: ``corpus/stats.json`` or None.
      validation: model -> its ``validate/<model>/summary.json`` (stage `validate`; may be empty).
      title: page title.
    """

    summary: dict[str, Any]
    figures: dict[str, bytes]
    browser: dict[str, list[dict[str, Any]]]
    metrics: dict[str, dict[str, Any]]
    corpus_stats: dict[str, Any] | None = None
    validation: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    title: str = "infljax: influence of pretraining documents"


_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 0; color: #222;
       background: #fafafa; line-height: 1.45; }
main { max-width: 1250px; margin: 0 auto; padding: 1.5em 2em 4em; background: #fff; }
h1 { margin-top: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em;
     margin-top: 2em; } h3 { margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
.reading { background: #eef5ff; border-left: 4px solid #4a7fd4; padding: 0.4em 0.8em;
           margin: 0.5em 0 1.2em; }
.warn { background: #fff4e5; border-left: 4px solid #e69500; padding: 0.4em 0.8em; }
.muted { color: #666; font-size: 0.9em; }
nav a { margin-right: 0.9em; }
details { border: 1px solid #ddd; border-radius: 4px; margin: 0.3em 0; padding: 0.2em 0.6em; }
details > summary { cursor: pointer; }
pre, .doc { white-space: pre-wrap; word-break: break-word; font-family: ui-monospace,
           SFMono-Regular, Menlo, monospace; font-size: 0.85em; margin: 0.2em 0; }
.doc { background: #f7f7f7; padding: 0.3em 0.5em; border-radius: 3px; }
.tag { display: inline-block; background: #e6f0e6; border-radius: 3px; padding: 0 0.4em;
       margin-right: 0.3em; font-size: 0.8em; }
.legend span { padding: 0 0.4em; }
table.docs { width: 100%; } table.docs td:last-child { width: 70%; }
"""


def render_report(inputs: ReportInputs) -> str:
    """The whole page as one HTML string."""
    models = model_order(inputs.summary)
    sections = [
        f"<h1>{html.escape(inputs.title)}</h1>",
        _nav(models),
        _setup(inputs, models),
        _headline(inputs.summary, models),
        *_analysis_sections(inputs, models),
        _baselines(inputs, models),
        _validation(inputs),
        _cross_model(inputs),
        *[
            _browser(
                m, inputs.browser.get(m, []), readings.family_order(inputs.summary["models"][m])
            )
            for m in models
        ],
    ]
    body = "\n".join(s for s in sections if s)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(inputs.title)}</title><style>{_CSS}</style></head>"
        f"<body><main>\n{body}\n</main></body></html>\n"
    )


def model_order(summary: dict[str, Any]) -> list[str]:
    """Models in display order (``setup.models``, smaller first), else as the summary lists them."""
    listed = summary.get("setup", {}).get("models") or []
    return [m for m in listed if m in summary.get("models", {})] or list(summary.get("models", {}))


def _nav(models: list[str]) -> str:
    links = [("setup", "Setup"), ("headline", "Headline"), ("A", "A"), ("C", "C"), ("D", "D")]
    links += [("F", "F"), ("GH", "G/H"), ("I", "I"), ("truth", "Ground truth"), ("B", "B/E")]
    links += [("baselines", "Baselines"), ("validation", "Validation")]
    links += [(f"browser-{m}", f"Documents ({m})") for m in models]
    return "<nav>" + "".join(f"<a href='#{a}'>{html.escape(t)}</a>" for a, t in links) + "</nav>"


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='num'>{c}</td>" if i >= numeric_from else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(inputs: ReportInputs, name: str, alt: str) -> str:
    data = inputs.figures.get(name)
    if data is None:
        return ""
    encoded = base64.b64encode(data).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'>"


# ----------------------------------------------------------------------------- setup


def _setup(inputs: ReportInputs, models: list[str]) -> str:
    parts = ["<h2 id='setup'>Setup</h2>", _models_table(inputs, models)]
    parts += [_quality_warning(inputs.metrics.get(m, {}), m) for m in models]
    parts.append(_corpus_table(inputs, models))
    parts.append(_queries_table(inputs, models))
    parts.append(_conventions(inputs.summary.get("setup", {}).get("args")))
    return "\n".join(p for p in parts if p)


def _conventions(args: dict[str, Any] | None) -> str:
    """How documents are ranked and which k each analysis uses (`AnalysisArgs`)."""
    if not args:
        return ""
    ranking = "score ÷ document-gradient norm" if args.get("normalise") else "raw score"
    return (
        f"<p class='muted'>Documents are ranked by {ranking}; magnitudes are raw scores per nat of "
        f"completion NLL. k: answers {args.get('answer_k')}, procedure labels "
        f"{args.get('procedure_k')}, power law {args.get('power_law_k')}, cross-model magnitudes "
        f"{args.get('magnitude_k')}, sources {args.get('source_ks')} (the study: 500, 100, 500, "
        "50k and 50…50k of 5M documents).</p>"
    )


def _models_table(inputs: ReportInputs, models: list[str]) -> str:
    rows = []
    for m in models:
        metrics = inputs.metrics.get(m, {})
        loss, unigram = metrics.get("final_held_out_loss"), metrics.get("unigram_entropy")
        gain = 1 - loss / unigram if loss is not None and unigram else None
        rows.append(
            [
                html.escape(m),
                fmt(metrics.get("num_params"), ","),
                fmt(loss, ".3f"),
                fmt(unigram, ".3f"),
                pct(gain),
                fmt(metrics.get("seconds"), ".0f"),
                _knowledge_cell(metrics.get("fact_knowledge")),
            ]
        )
    header = ["model", "parameters", "held-out loss (nats/token)", "unigram baseline"]
    header += ["below unigram", "train seconds", "knows the queried facts (chance)"]
    note = "" if any(inputs.metrics.values()) else "<p class='muted'>No metrics.json found.</p>"
    return "<h3>Models</h3>" + _table(header, rows) + note


def _knowledge_cell(knowledge: dict[str, Any] | None) -> str:
    """Forced-choice accuracy on the queried world facts (queries/stats.json), with chance."""
    if not knowledge:
        return "–"
    return f"{pct(knowledge['accuracy'])} ({pct(knowledge['chance'])})"


def _quality_warning(metrics: dict[str, Any], model: str) -> str:
    """A warning when held-out loss is not clearly (20%) below the unigram baseline."""
    loss, unigram = metrics.get("final_held_out_loss"), metrics.get("unigram_entropy")
    if loss is None or not unigram or loss < 0.8 * unigram:
        return ""
    gap = 1 - loss / unigram
    where = f"only {gap:.0%} below" if gap > 0 else f"{-gap:.0%} above"
    return (
        f"<p class='warn'>Model <b>{html.escape(model)}</b>: held-out loss {loss:.3f} nats/token "
        f"is {where} the unigram baseline {unigram:.3f}; it learned little beyond token "
        "frequencies, so its influence patterns say little about reasoning.</p>"
    )


def _corpus_table(inputs: ReportInputs, models: list[str]) -> str:
    stats = inputs.corpus_stats or {}
    sources = stats.get("sources")
    if sources:
        rows = [
            [html.escape(s), fmt(v.get("documents"), ","), pct(v.get("fraction"))]
            for s, v in sources.items()
        ]
        total = f"{stats.get('documents', 0):,} documents, {stats.get('tokens', 0):,} tokens"
    elif models:
        share = inputs.summary["models"][models[0]]["source_ratio"]["corpus_share"]
        rows = [[html.escape(s), "", pct(v)] for s, v in share.items()]
        total = f"{inputs.summary['models'][models[0]]['num_documents']:,} documents"
    else:
        return ""
    return f"<h3>Corpus</h3><p>{total}.</p>" + _table(["source", "documents", "share"], rows)


def _queries_table(inputs: ReportInputs, models: list[str]) -> str:
    families = list(
        dict.fromkeys(f for m in models for f in readings.family_order(inputs.summary["models"][m]))
    )
    rows = []
    for f in families:
        row = [html.escape(f)]
        for m in models:
            info = inputs.summary["models"][m]["families"].get(f)
            accuracy = readings.accuracy(inputs.browser.get(m, []), f)
            cell = f"{info['num_queries']} ({info['kind']})" if info else "–"
            row.append(cell + (f", {pct(accuracy)} correct" if accuracy is not None else ""))
        rows.append(row)
    return "<h3>Queries</h3>" + _table(["family", *map(html.escape, models)], rows)


# ----------------------------------------------------------------------------- headline


def _headline(summary: dict[str, Any], models: list[str]) -> str:
    rows = []
    for label, study, getter in readings.HEADLINE:
        cells = [html.escape(getter(summary["models"][m], summary, m)) for m in models]
        rows.append([html.escape(label), html.escape(study), *cells])
    header = ["measure", "study (7B / 35B)", *map(html.escape, models)]
    table = _table(header, rows, numeric_from=2)
    span = max(len(models), 1)
    for key, pair in summary.get("cross_model", {}).items():
        a, b = key.split("__", 1)
        value = f"{fmt(pair.get('mean_correlation'))} (max {fmt(pair.get('max_correlation'))})"
        table = table.replace(
            "</table>",
            f"<tr><td>Cross-model correlation, {html.escape(a)} vs {html.escape(b)}</td>"
            f"<td>0.02 (max 0.19)</td><td class='num' colspan='{span}'>{value}</td></tr></table>",
        )
    return (
        "<h2 id='headline'>Headline numbers next to the study's</h2>"
        + table
        + "<p class='muted'>Study values from Ruis et al. (2024), STUDY.md; k differs with corpus "
        "size (see each section).</p>"
    )


# ----------------------------------------------------------------------------- analyses


_SECTIONS: tuple[tuple[str, str, str, Callable], ...] = (
    ("A", "A. Query–query correlation", "correlation", readings.correlation),
    ("C", "C. Dependency on the top documents", "dependency", readings.dependency),
    ("D", "D. Power law of the top scores", "power_law", readings.power_law),
    ("F", "F. Answers in the top documents", "answers", readings.answers),
    ("GH", "G/H. Procedure documents and keyword labels", "categories", readings.categories),
    ("I", "I. Source over-representation", "sources", readings.sources),
    ("truth", "Ground-truth retrieval (procedural world)", "retrieval", readings.retrieval),
    ("layers", "Per-layer influence", "layers", readings.layers),
)


# Sections that show each baseline next to influence: (table, reading) of `comparison`.
_VERSUS: dict[str, tuple[Callable, Callable]] = {
    "answers": (comparison.answers_table, comparison.answers_reading),
    "categories": (comparison.relevance_table, comparison.relevance_reading),
    "sources": (comparison.sources_table, comparison.sources_reading),
    "retrieval": (comparison.retrieval_table, comparison.retrieval_reading),
}


def _analysis_sections(inputs: ReportInputs, models: list[str]) -> list[str]:
    out = []
    for anchor, title, kind, reading in _SECTIONS:
        blocks = []
        for m in models:
            text = reading(inputs.summary["models"][m], m)
            image = _img(inputs, figure_name(m, kind), f"{title}, {m}")
            if text or image:
                blocks.append(
                    f"<h3>{html.escape(m)}</h3>"
                    + (f"<p class='reading'>{html.escape(text)}</p>" if text else "")
                    + image
                    + _versus(inputs.summary["models"][m], kind)
                )
        if blocks:
            out.append(f"<h2 id='{anchor}'>{html.escape(title)}</h2>" + "".join(blocks))
    return out


def _versus(s: dict[str, Any], kind: str) -> str:
    """The section's numbers for influence and each baseline (nothing without baselines)."""
    if kind not in _VERSUS:
        return ""
    make_table, make_reading = _VERSUS[kind]
    table, text = make_table(s), make_reading(s)
    if table is None:
        return ""
    reading = f"<p class='reading'>{html.escape(text)}</p>" if text else ""
    return "<h4>Next to the baselines</h4>" + reading + _method_table(table)


def _method_table(table: comparison.Table) -> str:
    """A comparison table, the influence row (the first) in bold and each item of a cell's
    comma-separated list on a line of its own."""
    header, rows = table
    cells = [
        ["<br>".join(html.escape(part) for part in c.split(", ")) for c in row] for row in rows
    ]
    cells[0][0] = f"<b>{cells[0][0]}</b>"
    return _table([html.escape(h) for h in header], cells)


def _baselines(inputs: ReportInputs, models: list[str]) -> str:
    """Influence next to each baseline of ``models.<m>.baselines`` (stage `baselines`), every
    comparison in one table and one figure per model."""
    blocks = []
    for m in models:
        s = inputs.summary["models"][m]
        table = comparison.overview_table(s)
        if table is None:
            continue
        text = comparison.overview_reading(s)
        blocks.append(
            f"<h3>{html.escape(m)}</h3>"
            + (f"<p class='reading'>{html.escape(text)}</p>" if text else "")
            + _method_table(table)
            + _img(inputs, figure_name(m, "baselines"), f"{m} next to the baselines")
        )
    if not blocks:
        return ""
    return (
        "<h2 id='baselines'>EK-FAC vs baselines</h2><p class='muted'>Each baseline's [queries, "
        "documents] matrix (stage <code>baselines</code>) analysed exactly like the influence "
        "scores; sections F, G/H, I and ground truth show them family by family. TF-IDF is word "
        "overlap with the query, random is chance. On the procedural world TF-IDF alone finds "
        "most fact-stating documents (DESIGN §8): a number means something only next to it.</p>"
        + "".join(blocks)
    )


def _cross_model(inputs: ReportInputs) -> str:
    cross = inputs.summary.get("cross_model", {})
    if not cross:
        return ""
    blocks = []
    for key, pair in cross.items():
        a, b = key.split("__", 1)
        blocks.append(
            f"<h3>{html.escape(a)} vs {html.escape(b)}</h3>"
            f"<p class='reading'>{html.escape(readings.cross_model(pair, a, b))}</p>"
            + _img(inputs, pair_figure_name(a, b), f"cross-model {a} vs {b}")
        )
    return "<h2 id='B'>B/E. Across models</h2>" + "".join(blocks)


# ----------------------------------------------------------------------------- browser


def validation_figure_name(model: str, file: str) -> str:
    """Key of a validation figure (``validate/<model>/<file>``) in `ReportInputs.figures`."""
    return f"validate_{model}_{file}"


def _validation(inputs: ReportInputs) -> str:
    """Stage `validate`: per method, LDS by query kind with 95% intervals, and the ceiling."""
    blocks = []
    for m, v in inputs.validation.items():
        a = v["args"]
        kinds = [k for k in ("factual", "reasoning", "control") if k in set(v["kinds"])]
        header = ["method", *(f"LDS {k}" for k in kinds), "LDS all", "one seed"]
        single = "single_model" in v["lds"][v["methods"][0]]
        header += ["single model (all)"] if single else []
        meta = "metagradient_queries" in v
        header += ["on the metagradient's queries"] if meta else []
        rows = [
            [
                html.escape(method),
                *(_interval(v["lds"][method].get(k)) for k in (*kinds, "all")),
                fmt(v["lds"][method].get("seed0"), ".3f"),
                *([_interval(v["lds"][method]["single_model"].get("all"))] if single else []),
                *([_interval(v["lds"][method].get("on_metagradient_queries"))] if meta else []),
            ]
            for method in v["methods"]
        ]
        if "ceiling" in v:
            c = v["ceiling"]
            rows.append(
                ["<i>ceiling (half the seeds → the other half)</i>"]
                + [_interval(c.get(k)) for k in (*kinds, "all")]
                + [f"attainable ≈ {fmt(c.get('attainable'), '.2f')}"]
                + ([""] if single else [])
                + ([""] if meta else [])
            )
        r = v.get("retraining", {})
        blocks.append(
            f"<h3>{html.escape(m)}</h3>"
            + _table(header, rows)
            + f"<p class='reading'>{html.escape(_validation_reading(v))}</p>"
            + _img(
                inputs,
                validation_figure_name(m, "lds.png"),
                f"{m} LDS (diamonds: the single-model protocol)",
            )
            + _linearity(inputs, m, v)
            + f"<p class='muted'>{r.get('count', '?')} retrainings in "
            f"{fmt(r.get('seconds'), '.0f')} s ({fmt(r.get('per_hour_batched'), '.0f')} per "
            f"hour batched, {r.get('models_per_call', '?')} models per call; the pretrain "
            f"loop: {fmt(r.get('per_hour_sequential'), '.0f')} per hour). LDS: "
            f"{a['num_subsets']} random subsets of {pct(a['fraction'])} of the training "
            f"documents, each retrained from {a['seeds']} seeds; per query, Spearman between "
            "−Σ(subset scores) and the seeds' mean NLL; mean over queries with a bootstrap 95% "
            "interval (queries and subsets resampled). 'one seed': against the first seed's "
            "retrainings alone (what the metagradient, a derivative of that one run, "
            "describes). The ceiling bounds every method: the retrained NLL is also training "
            "noise. 'single model' (MAGIC's protocol): "
            f"{a.get('single_model_subsets', 0)} retrainings from the original seed alone, "
            f"each keeping {pct(a.get('single_model_fraction', 1.0))} of the documents, so "
            "the only change is the data; a derivative of the run can reach 1 there.</p>"
        )
    if not blocks:
        return ""
    return (
        "<h2 id='validation'>Validation: do the scores predict retraining?</h2>"
        "<p class='muted'>Retrieval numbers cannot tell influence from word overlap (see the "
        "baselines). The linear datamodeling score can (Park et al. 2023): a method is worth "
        "reporting if its scores predict how the model changes when it is retrained without "
        "documents.</p>" + "".join(blocks)
    )


def _interval(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    low, high = fmt(entry.get("low"), ".2f"), fmt(entry.get("high"), ".2f")
    return f"{fmt(entry['mean'], '.3f')} [{low}, {high}]"


def _linearity(inputs: ReportInputs, model: str, v: dict[str, Any]) -> str:
    """The linearity curve: single-model LDS and slope at each weight reduction t."""
    curves = {m: v["lds"][m].get("linearity", []) for m in v["methods"]}
    scales = [p["scale"] for p in next(iter(curves.values()))]
    if len(scales) < 2:
        return ""
    header = ["method", *(f"t = {t:g}: LDS / slope" for t in scales)]
    rows = [
        [html.escape(m)] + [f"{_interval(p['all'])} / {fmt(p.get('slope'), '.2g')}" for p in points]
        for m, points in curves.items()
    ]
    return (
        "<p class='muted'>Linearity: the single-model retrainings again with the dropped "
        "documents' weight lowered by t instead of removed (t = 1). A derivative of the run "
        "(the metagradient) is exact as t → 0; where its LDS falls with t, retraining stops "
        "being a linear function of the data, and no linear datamodel can follow it. Slope: "
        "median over queries of the measured change regressed on the predicted one (n/a for "
        "TF-IDF and random, whose scores are not effects in nats).</p>"
        + _table(header, rows)
        + _img(inputs, validation_figure_name(model, "linearity.png"), f"{model} linearity")
    )


def _validation_reading(v: dict[str, Any]) -> str:
    means = {m: v["lds"][m]["all"]["mean"] for m in v["methods"]}
    means = {m: x for m, x in means.items() if x is not None and np.isfinite(x)}
    if not means:
        return "No method has a defined LDS."
    top = max(means, key=means.get)
    line = f"Highest LDS: {top} ({means[top]:.2f})"
    if "ekfac" in means and top != "ekfac":
        line += f"; EK-FAC {means['ekfac']:.2f}"
    if "tfidf" in means:
        line += f"; TF-IDF {means['tfidf']:.2f}"
    ceiling = v.get("ceiling", {}).get("all", {}).get("mean")
    return line + (f"; ceiling {ceiling:.2f}." if ceiling is not None else ".")


def _browser(model: str, entries: list[dict[str, Any]], families: list[str]) -> str:
    """Every query's top and bottom documents, grouped by family; the first query is open."""
    if not entries:
        return ""
    legend = (
        "<p class='legend muted'>Click a query to see its documents. Per-token influence, where "
        "the scoring stage saved it: <span style='background:rgba(0,150,0,0.45)'>helps</span>"
        "<span style='background:rgba(220,0,0,0.45)'>hurts</span> (hover for the value). "
        "Score = ranking score (see conventions); raw = raw influence.</p>"
    )
    order = families + [f for f in dict.fromkeys(e["family"] for e in entries) if f not in families]
    groups = []
    for family in order:
        chosen = [e for e in entries if e["family"] == family]
        if chosen:
            items = "".join(
                _query_entry(e, opened=not groups and i == 0) for i, e in enumerate(chosen)
            )
            groups.append(f"<h3>{html.escape(family)}</h3>{items}")
    name = html.escape(model)
    return f"<h2 id='browser-{name}'>Top documents per query: {name}</h2>{legend}" + "".join(groups)


def _query_entry(entry: dict[str, Any], opened: bool = False) -> str:
    correct = entry.get("correct")
    mark = "" if correct is None else (" · ✓ correct" if correct else " · ✗ wrong")
    best = entry["top"][0] if entry["top"] else None
    first = f" · top: {html.escape(best['doc_id'])} ({html.escape(best['source'])})" if best else ""
    tags = (
        f" <span class='tag'>{html.escape(best['labels'][0])}</span>"
        if best and best["labels"]
        else ""
    )
    summary = (
        f"<b>{html.escape(entry['id'])}</b> · answer "
        f"<code>{html.escape(entry['answer'])}</code>{mark}{first}{tags}"
    )
    steps = ", ".join(entry.get("steps") or [])
    header = (
        f"<pre>{html.escape(entry['prompt'])}<b>{html.escape(entry['completion'])}</b></pre>"
        + (f"<p class='muted'>steps: {html.escape(steps)}</p>" if steps else "")
    )
    rows = [_document_row(d) for d in entry["top"]]
    if entry["bottom"]:
        rows.append(
            "<tr><td colspan='4' class='muted'>most negative (hurts the completion)</td></tr>"
        )
        rows += [_document_row(d) for d in entry["bottom"]]
    if entry.get("attributed"):
        rows.append(
            "<tr><td colspan='4' class='muted'>also attributed per token by the scoring stage "
            "(its top documents by raw score)</td></tr>"
        )
        rows += [_document_row(d) for d in entry["attributed"]]
    table = (
        "<table class='docs'><tr><th>rank</th><th>document</th><th>score</th><th>text</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    state = " open" if opened else ""
    return f"<details{state}><summary>{summary}</summary>{header}{table}</details>"


def _document_row(doc: dict[str, Any]) -> str:
    tags = "".join(f"<span class='tag'>{html.escape(t)}</span>" for t in doc.get("labels", []))
    text = _highlighted(doc["per_token"]) if doc.get("per_token") else html.escape(doc["text"])
    return (
        f"<tr><td class='num'>{doc['rank']}</td>"
        f"<td>{html.escape(doc['doc_id'])}<br><span class='muted'>{html.escape(doc['source'])}"
        f"</span><br>{tags}</td>"
        f"<td class='num'>{doc['score']:.3g}<br><span class='muted'>raw {doc['raw_score']:.3g}"
        f"</span></td><td><div class='doc'>{text}</div></td></tr>"
    )


def _highlighted(per_token: dict[str, list]) -> str:
    """Tokens as spans shaded by their score (green helps, red hurts), scaled to the largest
    |score| in the document; the exact score is in each span's tooltip."""
    scores = per_token["scores"]
    scale = max((abs(s) for s in scores), default=0.0) or 1.0
    spans = []
    for token, score in zip(per_token["tokens"], scores, strict=True):
        alpha = min(abs(score) / scale, 1.0) * 0.75
        colour = f"rgba(0,150,0,{alpha:.2f})" if score >= 0 else f"rgba(220,0,0,{alpha:.2f})"
        spans.append(
            f"<span style='background:{colour}' title='{score:.3g}'>{html.escape(token)}</span>"
        )
    return "".join(spans)
