"""report/index.html: parses, embeds every figure as a valid PNG, shows what it must."""

import base64
import io
from html.parser import HTMLParser

import pytest
from PIL import Image

from infljax.analysis.report import ReportInputs, render_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.ids, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if "id" in attrs:
            self.ids.append(attrs["id"])


@pytest.fixture(scope="module")
def page(analysed_workdir):
    return (analysed_workdir / "report" / "index.html").read_text(encoding="utf-8")


def test_every_figure_is_embedded_and_decodes_as_png(page, analysed_workdir):
    parser = _Collector()
    parser.feed(page)
    parser.close()
    pngs = sorted((analysed_workdir / "analysis").glob("*.png"))
    assert len(pngs) >= 15 and len(parser.images) == len(pngs)
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    assert {"setup", "headline", "A", "C", "D", "F", "GH", "I", "truth", "B"} <= set(parser.ids)
    assert "http://" not in page and "https://" not in page  # nothing fetched


def test_page_shows_setup_headline_and_documents(page, study):
    assert "0.02 (max 0.19)" in page and "55% / 30%" in page  # the study's numbers
    assert "held-out loss" in page and "unigram" in page
    for query in study.queries:
        assert f"<b>{query['id']}</b>" in page
    assert "states the fact" in page and "planted answer" in page
    assert "rgba(0,150,0," in page and "rgba(220,0,0," in page  # per-token highlights


def test_render_without_figures_metrics_or_documents():
    summary = {"models": {}, "cross_model": {}}
    page = render_report(ReportInputs(summary=summary, figures={}, browser={}, metrics={}))
    parser = _Collector()
    parser.feed(page)
    assert parser.images == [] and "<h1>" in page


def test_a_model_that_learned_little_is_flagged(analysed_workdir):
    from infljax.stages.report import report_inputs

    inputs = report_inputs(analysed_workdir)
    metrics = {**inputs.metrics, "small": {"final_held_out_loss": 3.9, "unigram_entropy": 4.0}}
    page = render_report(ReportInputs(inputs.summary, {}, {}, metrics))
    assert "learned little" in page
    assert "learned little" not in render_report(
        ReportInputs(inputs.summary, {}, {}, inputs.metrics)
    )
