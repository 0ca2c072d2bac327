"""Reading the workdir contract: queries (per model), documents (+ world truth), score files."""

import json

import numpy as np
import pytest

from infljax.analysis.inputs import (
    AnalysisInputError,
    DocumentTable,
    ModelScores,
    QueryRecord,
    read_documents,
    read_model_scores,
    read_queries,
)
from infljax.analysis.study import AnalysisArgs, analyse_model
from infljax.data.readers import Record


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_queries_keep_extra_fields_and_are_filtered_by_model(tmp_path):
    rows = [
        {"id": "a", "family": "factual", "answer": "x", "fact_ids": ["f1"]},
        {"id": "b", "family": "slope", "steps": ["1", "2"], "model": "small"},
        {"id": "b", "family": "slope", "steps": ["1", "3"], "model": "large"},
    ]
    _write_jsonl(tmp_path / "q.jsonl", rows)
    small = read_queries(tmp_path / "q.jsonl", model="small")
    assert [q.id for q in small] == ["a", "b"] and small[1].steps == ("1", "2")
    assert small[0].extra == {"fact_ids": ["f1"]}
    with pytest.raises(AnalysisInputError, match="steps"):
        QueryRecord.from_json({"id": "c", "family": "f", "steps": "12"}, "here")


def test_documents_take_ground_truth_from_world_json_when_rows_lack_it(tmp_path):
    _write_jsonl(tmp_path / "documents.jsonl", [{"doc_id": "d0", "source": "wiki", "text": "t"}])
    world = {"documents": [{"doc_id": "d0", "states": ["f1"], "procedure": None}]}
    (tmp_path / "world.json").write_text(json.dumps(world))
    assert not read_documents(tmp_path).has_ground_truth
    table = read_documents(tmp_path, tmp_path / "world.json")
    assert table.has_ground_truth and table.states == (frozenset({"f1"}),)


def test_score_files_are_validated(tmp_path):
    d = tmp_path / "scores"
    d.mkdir()
    _write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "family": "factual"}])
    with pytest.raises(AnalysisInputError, match="run the scores stage"):
        read_model_scores(d, "m", tmp_path / "q.jsonl")
    np.save(d / "scores.npy", np.zeros((2, 3), np.float32))
    np.save(d / "query_nats.npy", np.ones(2))
    np.save(d / "doc_grad_norms.npy", np.ones(3))
    with pytest.raises(AnalysisInputError, match="2 score rows but 1 queries"):
        read_model_scores(d, "m", tmp_path / "q.jsonl")
    with pytest.raises(AnalysisInputError, match="NaN"):
        ModelScores(
            "m",
            np.full((1, 3), np.nan),
            np.ones(1),
            np.ones(3),
            (QueryRecord("a", "f", "", "", ""),),
        )


def test_a_model_without_queries_is_refused():
    table = DocumentTable.from_records([Record("d0", "web", "text")])
    empty = ModelScores("m", np.zeros((0, 1), np.float32), np.zeros(0), np.ones(1), ())
    with pytest.raises(ValueError, match="no queries"):
        analyse_model(empty, table, AnalysisArgs())
