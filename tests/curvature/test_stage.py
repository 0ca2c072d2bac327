"""The factors stage on a tiny workdir: fit, skip, refuse, partitions, layer groups and
resume-after-interrupt.

Factors written by the stage equal the in-memory reference fit (batches of 6 on one device) to
1e-10 relative, whatever the partitioning and layer grouping and however often the fit was
interrupted.
"""

import dataclasses
import itertools
import json

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from infljax import planning
from infljax.checkpoints import StageConflict, is_complete, save_pytree
from infljax.curvature import load_factors, open_factors, save_factors
from infljax.curvature.fit import FactorFit, FitPlan, report_memory
from infljax.curvature.state import Counts
from infljax.curvature.storage import saved_layers
from infljax.data.corpus import load_corpus, save_corpus
from infljax.distributed import Placement, make_mesh
from infljax.models.capture import layer_groups
from infljax.models.io import load_model, save_model
from infljax.pipeline import run_stages
from infljax.workdir import corpus_dir, factors_dir, model_dir

from .conftest import ARGS, CFG

RTOL = 1e-10
AUTO = dataclasses.replace(ARGS, lambda_chunk=0)


def config(partitions: int, seed: int = ARGS.seed, layer_groups: int = 1) -> ConfigDict:
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
                "layer_groups": layer_groups,
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
    fit = lambda stop: fit_for(  # noqa: E731
        FactorFit("tiny", model, layers, corpus, plan, AUTO, Placement(make_mesh()), out), stop
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


def fit_for(fit: FactorFit, partitions: int | None) -> bool:
    """Run `fit` for at most `partitions` newly computed partitions (None: to the end), as a
    time-sliced job would; whether the factors are complete."""
    for _ in itertools.islice(fit.partitions(), partitions):
        pass
    return is_complete(fit.out)


def fit_plan(partitions: int = 2, groups: int = 1) -> FitPlan:
    return FitPlan(num_documents=0, batch_size=16, partitions=partitions, layer_groups=groups)


def stored_parts(out, kind: str) -> dict[tuple[str, ...], list[str]]:
    """{a group's layers: its stored partitions} of one pass's partial sums in `out`."""
    found = {}
    for group in (out / kind).glob("group_*"):
        layers = tuple(json.loads((group / "layers.json").read_text()))
        found[layers] = sorted(p.stem for p in group.glob("part_*.json"))
    return found


def test_layer_groups_are_contiguous_balanced_and_bounded():
    assert layer_groups(list("abcdefg"), 3) == [("a", "b", "c"), ("d", "e"), ("f", "g")]
    assert layer_groups(("a", "b"), 1) == [("a", "b")]
    assert layer_groups(("a", "b"), 2) == [("a",), ("b",)]
    with pytest.raises(ValueError, match=r"3 layer groups for 2 tracked layers.* and 2 \("):
        layer_groups(("a", "b"), 3)
    with pytest.raises(ValueError, match="0 layer groups for 2 tracked layers"):
        layer_groups(("a", "b"), 0)
    with pytest.raises(ValueError, match="factors.layer_groups must be positive, got 0"):
        FitPlan(layer_groups=0)


@pytest.mark.parametrize("groups", [2, 3])
def test_layer_groups_fit_the_same_factors(workdir, factors, layers, groups):
    """Each group's passes form its layers' sums over the same rows as one pass over every layer
    (a layer's sums involve no other layer), so the factors agree to RTOL with one group and
    with the reference. (On one mesh they come out bitwise equal; the tolerance is asserted.)"""
    model, corpus = load_model(model_dir(workdir, "tiny")), load_corpus(corpus_dir(workdir))
    fitted = {}
    for g in (1, groups):
        out = workdir / f"groups_{g}"
        FactorFit(
            "tiny", model, layers, corpus, fit_plan(2, g), AUTO, Placement(make_mesh()), out
        ).run()
        assert is_complete(out)
        fitted[g] = load_factors(out)
        assert json.loads((out / "fit.json").read_text())["layer_groups"] == g
        assert not (out / "covariance").exists() and not (out / "lambdas").exists()
    assert list(fitted[groups]) == list(layers)
    assert_equal_factors(fitted[groups], fitted[1])
    assert_equal_factors(fitted[groups], factors)


def test_stage_reads_layer_groups_and_may_resume_with_others(workdir, factors):
    run_stages(config(partitions=1, layer_groups=2), workdir, only=["factors"])
    out = factors_dir(workdir, "tiny")
    assert json.loads((out / "fit.json").read_text())["layer_groups"] == 2
    assert_equal_factors(load_factors(out), factors)
    # not a stage argument (results do not depend on it): up to date, not a conflict
    run_stages(config(partitions=1, layer_groups=1), workdir, only=["factors"])


def test_interrupted_grouped_fit_resumes_also_with_another_grouping(workdir, factors, layers):
    """Partial sums are kept per group of layers: a fit resumes at its next (group, partition),
    and a resumed fit with other groups reuses only the groups it shares (here layers 0-1)."""
    model, corpus = load_model(model_dir(workdir, "tiny")), load_corpus(corpus_dir(workdir))
    out = factors_dir(workdir, "tiny")
    fit = lambda groups, stop: fit_for(  # noqa: E731
        FactorFit(
            "tiny", model, layers, corpus, fit_plan(2, groups), AUTO, Placement(make_mesh()), out
        ),
        stop,
    )
    both = ["part_00000", "part_00001"]
    first, second = layers[:2], layers[2:]  # the 2 groups of the 4 layers
    assert not fit(2, 3)  # group 1: covariance partitions 0, 1, lambdas 0
    assert stored_parts(out, "covariance") == {first: both}
    assert stored_parts(out, "lambdas") == {first: ["part_00000"]}
    assert not fit(2, 2)  # group 1: lambdas 1; group 2: covariance 0
    assert stored_parts(out, "covariance") == {first: both, second: ["part_00000"]}
    assert stored_parts(out, "lambdas") == {first: both}
    assert set(saved_layers(out)) == set(first)  # a complete group's factors are on disk
    # 3 groups: layers 0-1 (all on disk), 2, 3. Four partitions complete layer 2's group.
    assert not fit(3, 4)
    assert (
        stored_parts(out, "covariance")
        == {
            first: both,
            second: ["part_00000"],  # left over from 2 groups, unused by 3
            layers[2:3]: both,
        }
    )
    assert stored_parts(out, "lambdas") == {first: both, layers[2:3]: both}
    assert fit(3, None) and is_complete(out)
    assert_equal_factors(load_factors(out), factors)
    assert not (out / "covariance").exists() and not (out / "lambdas").exists()


def test_factors_are_read_a_layer_at_a_time_and_the_old_format_still_reads(tmp_path, factors):
    """`open_factors` reads each layer from its own directory when it is looked up; factors
    written as one pytree (format 1, before per-layer directories) read the same."""
    counts = Counts(tokens=7, sequences=3)
    save_factors(tmp_path / "new", factors, counts)
    store = open_factors(tmp_path / "new")
    assert list(store) == list(factors) and store.version == 2
    assert saved_layers(tmp_path / "new") == dict.fromkeys(factors, counts)
    assert_equal_factors({p: store[p] for p in store}, factors)
    old = tmp_path / "old"
    save_pytree(old / "arrays", factors)
    meta = {
        "format_version": 1,
        "dtype": "float64",
        "layers": {p: list(f.shape) for p, f in factors.items()},
    }
    (old / "factors.json").write_text(json.dumps(meta))
    assert_equal_factors(load_factors(old), factors)
    path = next(iter(factors))
    assert_equal_factors({path: open_factors(old)[path]}, {path: factors[path]})


def test_more_layer_groups_than_layers_are_refused_before_fitting(workdir, layers):
    model, corpus = load_model(model_dir(workdir, "tiny")), load_corpus(corpus_dir(workdir))
    out = factors_dir(workdir, "tiny")
    with pytest.raises(ValueError, match="5 layer groups for 4 tracked layers"):
        FactorFit(
            "tiny", model, layers, corpus, fit_plan(2, 5), AUTO, Placement(make_mesh()), out
        ).run()
    assert not out.exists()


def test_memory_refusal_names_the_layer_groups_that_fit(monkeypatch, trained_model, layers):
    """The plan is checked for its largest layer group; a refusal names the fewest groups that
    fit at the same batch (one sequence per device: no smaller batch exists), or none when even
    one layer per group does not fit."""
    where, length = Placement(make_mesh()), CFG.max_length
    args = dataclasses.replace(ARGS, lambda_chunk=1)
    work = planning.Workload(seq=length, lambda_chunk=1, fisher=args.fisher)
    layout = planning.Layout.of(where)

    def needs(fit_pass, group):
        shapes = planning.ModelShapes.of(trained_model, group)
        return planning.estimate(fit_pass, shapes, work, layout, 8).total

    def report(groups, device):
        monkeypatch.setattr(planning, "device_memory_bytes", lambda: device)
        plan = FitPlan(batch_size=8, layer_groups=groups)
        report_memory("tiny", trained_model, layers, plan, args, where, length)

    device = needs("lambdas", layers) - 1  # every layer in one group does not fit
    assert needs("covariance", layers) <= device  # the covariance pass does
    assert needs("lambdas", layers[:2]) <= (1 - planning.HEADROOM) * device  # half the layers do
    with pytest.raises(planning.PlanError) as error:
        report(1, device)
    message = str(error.value)
    assert message.startswith("lambdas: needs") and message.endswith(
        "; or config.factors.layer_groups=2 fits at batch 8 with 10% headroom"
    )
    report(2, device)
    device = min(needs("covariance", [p]) for p in layers) - 1  # no single layer fits
    with pytest.raises(planning.PlanError) as error:
        report(1, device)
    message = str(error.value)
    assert message.startswith("covariance: needs") and "layer_groups" not in message
