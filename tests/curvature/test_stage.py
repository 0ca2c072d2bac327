"""The factors stage on a tiny workdir: fit, skip, refuse, partitions and resume-after-interrupt.

Factors written by the stage equal the in-memory reference fit (batches of 6 on one device) to
1e-10 relative, whatever the partitioning and however often the fit was interrupted.
"""

import dataclasses

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from infljax.checkpoints import StageConflict, is_complete
from infljax.curvature import load_factors
from infljax.data.corpus import load_corpus, save_corpus
from infljax.distributed import make_mesh
from infljax.models.io import load_model, save_model
from infljax.pipeline import run_stages
from infljax.stages.factors import FitPlan, fit_model_factors
from infljax.workdir import corpus_dir, factors_dir, model_dir

from .conftest import ARGS

RTOL = 1e-10
AUTO = dataclasses.replace(ARGS, lambda_chunk=0)


def config(partitions: int, seed: int = ARGS.seed) -> ConfigDict:
    return ConfigDict(
        {
            "stages": ("factors",),
            "overwrite": False,
            "mesh": {"data": -1, "model": 1},
            "models": {"tiny": {}, "untrained": {}},  # no model dir for "untrained": skipped
            "factors": {
                "layers": (r"blocks\.\d+\.mlp\..*",),
                "fisher": ARGS.fisher,
                "num_documents": 0,
                "batch_size": 16,
                "lambda_chunk": 0,  # automatic, like the 8-device fit in test_fit.py
                "partitions": partitions,
                "seed": seed,
            },
        }
    )


@pytest.fixture()
def workdir(tmp_path, trained_model, corpus):
    save_corpus(corpus_dir(tmp_path), corpus)
    save_model(model_dir(tmp_path, "tiny"), trained_model)
    return tmp_path


def assert_equal_factors(got, ref):
    assert sorted(got) == sorted(ref)
    for path in ref:
        for name in vars(ref[path]):
            x, y = np.asarray(getattr(got[path], name)), np.asarray(getattr(ref[path], name))
            assert np.linalg.norm(x - y) <= RTOL * np.linalg.norm(y), (path, name)


def test_stage_fits_skips_and_refuses_changed_arguments(workdir, factors):
    run_stages(config(partitions=1), workdir, only=["factors"])
    out = factors_dir(workdir, "tiny")
    assert is_complete(out) and not factors_dir(workdir, "untrained").exists()
    assert_equal_factors(load_factors(out), factors)
    run_stages(config(partitions=1), workdir, only=["factors"])  # up to date: skipped
    with pytest.raises(StageConflict, match=r"factors\.seed: 3 -> 4"):
        run_stages(config(partitions=1, seed=4), workdir, only=["factors"])


def test_interrupted_partitioned_fit_resumes_to_the_same_factors(workdir, factors, layers):
    model, corpus = load_model(model_dir(workdir, "tiny")), load_corpus(corpus_dir(workdir))
    out = factors_dir(workdir, "tiny")
    plan = FitPlan(num_documents=0, batch_size=16, partitions=3)
    fit = lambda stop: fit_model_factors(  # noqa: E731
        "tiny", model, layers, corpus, plan, AUTO, make_mesh(), out, stop_after=stop
    )
    assert not fit(2)  # covariance partitions 0 and 1
    assert sorted(p.name for p in (out / "covariance").glob("part_*.json")) == [
        "part_00000.json",
        "part_00001.json",
    ]
    assert not fit(2)  # covariance 2, lambdas 0
    assert fit(None) and is_complete(out)
    assert_equal_factors(load_factors(out), factors)
    assert len(jax.devices()) == 8
