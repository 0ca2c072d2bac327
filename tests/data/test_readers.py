"""Tests for infljax.data.readers: validation, locations of bad records, formats."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infljax.data.readers import CorpusError, Record, read_corpus


def _write_lines(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _jsonl(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


@pytest.fixture
def messy_jsonl(tmp_path):
    lines = [
        _jsonl({"id": "a", "source": "wiki", "text": "first", "states": ["x"]}),  # line 1 ok
        b"{not json",  # line 2
        _jsonl({"id": "c", "source": "code"}),  # line 3: no text
        _jsonl({"id": "d", "text": ""}),  # line 4: empty
        b'{"id": "e", "text": "caf\xe9"}',  # line 5: latin-1 byte, invalid UTF-8
        _jsonl(["a", "list"]),  # line 6: not an object
        b"",  # line 7: blank, not a record
        _jsonl({"text": "no id or source"}),  # line 8 ok, default id
        _jsonl({"id": "f", "text": 3}),  # line 9: non-string text
        _jsonl({"id": 7, "text": "int id é"}),  # line 10 ok
    ]
    return _write_lines(tmp_path / "corpus.jsonl", lines)


def test_jsonl_bad_records_reported_with_line_and_reason(messy_jsonl):
    result = read_corpus(messy_jsonl)
    got = {(b.line_or_row, b.unit): b.reason for b in result.bad}
    assert set(got) == {
        (2, "line"),
        (3, "line"),
        (4, "line"),
        (5, "line"),
        (6, "line"),
        (9, "line"),
    }
    assert "not valid JSON" in got[(2, "line")]
    assert "missing 'text'" in got[(3, "line")]
    assert "empty" in got[(4, "line")]
    assert "invalid UTF-8" in got[(5, "line")]
    assert "not a JSON object" in got[(6, "line")]
    assert "must be a string" in got[(9, "line")]
    assert all(b.path == str(messy_jsonl) for b in result.bad)


def test_jsonl_good_records_defaults_and_extras(messy_jsonl):
    records = read_corpus(messy_jsonl).records
    assert records[0] == Record("a", "wiki", "first", {"states": ["x"]})
    # Default id is the record index (blank line 7 is not a record: line 8 is record 6).
    assert records[1] == Record("6", "unknown", "no id or source", {})
    assert records[2] == Record("7", "unknown", "int id é", {})
    assert len(records) == 3


def test_on_bad_error_names_file_and_line(messy_jsonl):
    with pytest.raises(CorpusError, match=r"corpus\.jsonl line 2: not valid JSON"):
        read_corpus(messy_jsonl, on_bad="error")


def test_duplicate_ids(tmp_path):
    path = _write_lines(
        tmp_path / "dup.jsonl",
        [_jsonl({"id": "x", "text": "one"}), _jsonl({"id": "x", "text": "two"})],
    )
    result = read_corpus(path)
    assert [r.text for r in result.records] == ["one"]
    assert result.bad[0].line_or_row == 2
    assert "duplicate id 'x'" in result.bad[0].reason
    with pytest.raises(CorpusError, match="line 2: duplicate id 'x'"):
        read_corpus(path, on_bad="error")


def test_doc_id_alias_and_reserved_clash(tmp_path):
    path = _write_lines(
        tmp_path / "c.json",
        [_jsonl({"doc_id": "k", "text": "t"}), _jsonl({"id": "a", "doc_id": "b", "text": "t"})],
    )
    result = read_corpus(path)
    assert [r.doc_id for r in result.records] == ["k"]
    assert result.bad[0].line_or_row == 2 and "both 'id' and 'doc_id'" in result.bad[0].reason


def test_parquet_reading_with_bad_row(tmp_path):
    table = pa.table(
        {
            "id": ["p0", "p1", "p2"],
            "text": ["hello", None, "world"],
            "source": ["web", "web", None],
            "answers": [[1], [2], [3]],
        }
    )
    path = tmp_path / "corpus.parquet"
    pq.write_table(table, path)
    result = read_corpus(path)
    assert result.records == [
        Record("p0", "web", "hello", {"answers": [1]}),
        Record("p2", "unknown", "world", {"answers": [3]}),
    ]
    (bad,) = result.bad
    assert (bad.line_or_row, bad.unit, bad.reason) == (1, "row", "missing 'text'")
    with pytest.raises(CorpusError, match=r"corpus\.parquet row 1: missing 'text'"):
        read_corpus(path, on_bad="error")


def test_directory_of_shards_is_read_in_sorted_order(tmp_path):
    _write_lines(tmp_path / "b.jsonl", [_jsonl({"text": "b0"})])
    _write_lines(tmp_path / "a.jsonl", [_jsonl({"text": "a0"}), _jsonl({"text": "a1"})])
    (tmp_path / "notes.txt").write_text("ignored")
    records = read_corpus(tmp_path).records
    assert [(r.doc_id, r.text) for r in records] == [("0", "a0"), ("1", "a1"), ("2", "b0")]
    assert [r.text for r in read_corpus(tmp_path / "*.jsonl").records] == ["a0", "a1", "b0"]


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_corpus(tmp_path / "nope.jsonl")
    (tmp_path / "corpus.csv").write_text("text\nhi\n")
    with pytest.raises(ValueError, match=r"unsupported suffix '\.csv'.*\.jsonl, \.json, \.parquet"):
        read_corpus(tmp_path / "corpus.csv")
    with pytest.raises(ValueError, match="on_bad"):
        read_corpus(tmp_path / "corpus.csv", on_bad="ignore")
