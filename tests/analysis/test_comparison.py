"""Baselines next to influence: summary.json holds their F, G/H, I and ground-truth analyses with
the numbers the synthetic baselines plant, and the report shows them (and renders without)."""

import json

import pytest

from infljax.analysis import comparison
from infljax.analysis.report import ReportInputs, render_report
from infljax.stages.report import report_inputs
from tests.analysis.synthetic import CODE_FIRST_TASK

FAMILIES = ("factual", "arithmetic", "slope", "factual_control", "reasoning_control")
SECTIONS = ("answer_in_top_k", "categories", "source_ratio", "ground_truth")


@pytest.fixture(scope="module")
def summary(analysed_workdir):
    return json.loads((analysed_workdir / "analysis" / "summary.json").read_text())


def test_every_baseline_is_analysed_like_the_model(summary):
    for name in ("small", "large"):
        m = summary["models"][name]
        assert sorted(m["baselines"]) == ["code_first", "random", "same"]
        assert sorted(m["baseline_overlap"]) == ["code_first", "random", "same"]
        for entry in m["baselines"].values():
            assert set(entry) == set(SECTIONS)
            assert entry["source_ratio"]["ks"] == m["source_ratio"]["ks"]
            assert entry["categories"]["k"] == m["categories"]["k"]


def test_a_baseline_with_the_model_ranking_reproduces_its_numbers(summary):
    for name in ("small", "large"):
        m = summary["models"][name]
        same = m["baselines"]["same"]
        for section in SECTIONS:
            assert same[section] == m[section], section
        overlap = m["baseline_overlap"]["same"]
        assert overlap["k"] == 5 and overlap["chance"] == pytest.approx(5 / m["num_documents"])
        assert all(overlap[f] == 1.0 for f in FAMILIES)


def test_a_baseline_ranking_code_first_has_only_code_at_the_top(summary, study):
    n = len(study.documents)
    code = sum(d.source == "code" for d in study.documents)  # 24, more than k = 10
    for name in ("small", "large"):
        entry = summary["models"][name]["baselines"]["code_first"]
        ratios = entry["source_ratio"]
        assert ratios["corpus_share"]["code"] == pytest.approx(code / n)
        for k in ("3", "10"):
            for family in FAMILIES:
                expected = {s: 0.0 for s in ratios["sources"]} | {"code": n / code}
                assert ratios["top"][k][family] == pytest.approx(expected, rel=1e-12)
        for family in FAMILIES:  # the 24 code documents, then 6 others
            assert ratios["top"]["30"][family]["code"] == pytest.approx(n / 30, rel=1e-12)
        procedure = entry["categories"]["procedure"]
        assert procedure[CODE_FIRST_TASK] == 1.0 and procedure["slope"] == 0.0
        assert entry["categories"]["ground_truth"]["factual"]["states_fact"] == 0.0
        assert entry["answer_in_top_k"]["factual"] == 0.0
        assert entry["ground_truth"]["fact_recall_at_10"] == 0.0
        assert entry["ground_truth"]["fact_median_rank"] > code
        # influence's top 5 of a factual query holds its wiki and trivia fact documents
        assert summary["models"][name]["baseline_overlap"]["code_first"]["factual"] <= 0.6


def test_strategy_names_the_influence_row(summary):
    assert summary["models"]["small"]["conventions"]["strategy"] == "ekfac"
    assert "strategy" not in summary["models"]["large"]["conventions"]
    assert comparison.influence_label(summary["models"]["small"]) == "EK-FAC"
    assert comparison.influence_label(summary["models"]["large"]) == "influence"
    labels = [label for label, _ in comparison.methods(summary["models"]["small"])]
    assert labels == ["EK-FAC", "code_first", "same", "random"]  # random last


def test_tables_put_influence_first_and_read_the_sections(summary, study):
    s = summary["models"]["small"]
    n, code = len(study.documents), sum(d.source == "code" for d in study.documents)
    header, rows = comparison.sources_table(s)
    assert header == ["method", *FAMILIES]
    assert [r[0] for r in rows] == ["EK-FAC", "code_first", "same", "random"]
    assert rows[1][1].startswith(f"code {n / code:.1f}×")
    assert rows[2] == [rows[2][0], *rows[0][1:]]  # `same` reads exactly like influence
    header, rows = comparison.relevance_table(s)
    assert header[1] == "factual: states the fact"
    assert header[2].startswith(f"{CODE_FIRST_TASK}: same procedure (corpus ")
    assert rows[1][1:3] == ["0%", "100%"]
    header, rows = comparison.retrieval_table(s)
    assert rows[-1][0] == "chance" and rows[1][1:3] == ["0%", "0%"]
    header, rows = comparison.overview_table(s)
    assert header[-1] == f"top 5 shared with EK-FAC (chance {100 * 5 / n:.0f}%)"
    assert rows[0][-1] == "–" and rows[2][-1] == "factual 100%, reasoning 100%"


def test_report_shows_the_baselines_in_every_retrieval_and_source_section(analysed_workdir, study):
    page = (analysed_workdir / "report" / "index.html").read_text(encoding="utf-8")
    assert page.count("<h4>Next to the baselines</h4>") == 2 * 4  # F, G/H, I, truth per model
    assert "EK-FAC vs baselines" in page and "<td>code_first</td>" in page
    assert "<td><b>EK-FAC</b></td>" in page and "<td><b>influence</b></td>" in page
    ratio = len(study.documents) / sum(d.source == "code" for d in study.documents)
    assert "Most over-represented source in the top 3, factual: EK-FAC " in page
    assert f"code_first code {ratio:.1f}×" in page
    assert "Share of EK-FAC&#x27;s top 5 documents also in a baseline&#x27;s top 5" in page
    assert "small next to the baselines" in page  # the figure


def test_report_renders_without_baselines(analysed_workdir):
    inputs = report_inputs(analysed_workdir)
    models = {
        name: {k: v for k, v in m.items() if k not in ("baselines", "baseline_overlap")}
        for name, m in inputs.summary["models"].items()
    }
    summary = {**inputs.summary, "models": models}
    figures = {k: v for k, v in inputs.figures.items() if "baselines" not in k}
    page = render_report(ReportInputs(summary, figures, inputs.browser, inputs.metrics))
    assert "Next to the baselines" not in page and "EK-FAC vs baselines" not in page
    assert "<h2 id='I'>" in page and "<h2 id='F'>" in page
    assert comparison.overview_table(models["small"]) is None
    assert comparison.sources_reading(models["small"]) is None
