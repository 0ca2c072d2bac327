"""The workdir's typed files (`infljax.workdir`): a score directory's arrays are written and read
through `ScoreFiles` alone."""

import numpy as np
import pytest

from infljax.workdir import ScoreFiles


def test_score_arrays_round_trip_and_the_matrices_are_float32(tmp_path):
    files = ScoreFiles(tmp_path)
    scores = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
    norms = np.array([1.0, 2.0, 3.0])
    files.save(scores=scores, doc_grad_norms=norms, scored=scores > 0.2)
    assert files.missing() == ["query_nats.npy"]
    got = files.load("scores", mmap=True)
    assert isinstance(got, np.memmap) and got.dtype == np.float32
    np.testing.assert_array_equal(got, scores.astype(np.float32))
    np.testing.assert_array_equal(files.load("doc_grad_norms"), norms)  # other arrays keep dtype
    assert files.load("doc_grad_norms").dtype == np.float64
    assert files.load("scored").dtype == bool
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "doc_grad_norms.npy",
        "scored.npy",
        "scores.npy",
    ]  # no temporary file is left behind


def test_an_unknown_or_absent_array_is_a_clear_error(tmp_path):
    files = ScoreFiles(tmp_path)
    with pytest.raises(ValueError, match="holds no array 'score'; one of"):
        files.save(score=np.zeros(2))
    with pytest.raises(FileNotFoundError, match=f"no query_nats.npy in {tmp_path}"):
        files.load("query_nats")
