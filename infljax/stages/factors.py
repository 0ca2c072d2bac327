"""Stage `factors`: fit EK-FAC factors for every trained model in the config.

Per model ``<workdir>/factors/<name>/`` holds ``args.json`` (stage arguments), ``layers/`` +
``factors.json`` (the fitted factors, a layer per directory, written as each group of layers
completes; `infljax.curvature.open_factors` / `load_factors` read them), ``fit.json`` (counts,
layer groups, time) and, while fitting, the partial sums of each data partition, so an
interrupted fit resumes from its last completed group and partition (they are removed once the
factors are complete).

The tracked layers are fitted in `FitPlan.layer_groups` contiguous groups (`layer_groups`): each
group has its own covariance pass, eigendecomposition and lambda pass over the same rows, which
capture only the group's layers, so a step holds one group's factor state. A layer's sums do not
depend on which layers share its pass, so the factors do not depend on the grouping, and the
grouping is left out of the stage's arguments: like the batch size it may change on resume. The
partial sums therefore lie in directories named by the layers they hold, never by a group's
index: ``covariance/part_*`` and ``lambdas/part_*`` with one group (every layer; the layout of
fits made before groups existed), ``covariance/group_<hash>/part_*`` and
``lambdas/group_<hash>/part_*`` with several, <hash> being 8 hex digits of the SHA-256 of the
group's layer paths, which the directory's ``layers.json`` lists. A fit resumed with another
grouping reuses the sums of the groups it shares with the old one and recomputes the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from absl import logging
from flax import nnx
from ml_collections import ConfigDict
from tqdm import tqdm

from infljax import planning
from infljax.checkpoints import begin_stage, finish_stage
from infljax.curvature.eigen import eigendecompose
from infljax.curvature.passes import (
    FactorArgs,
    check_finite_parameters,
    covariance_pass,
    factor_dtype,
    lambda_pass,
    layer_shapes,
    row_batches,
)
from infljax.curvature.state import (
    Counts,
    Factors,
    Statistics,
    build_factors,
    merge_all,
    zero_covariance,
    zero_lambdas,
)
from infljax.curvature.storage import (
    finish_factors,
    load_statistics,
    save_layer_factors,
    save_statistics,
    saved_layers,
    statistics_exist,
)
from infljax.data.corpus import TokenizedCorpus, load_corpus
from infljax.distributed import MeshArgs, Placement, make_placement, process_rows
from infljax.models.capture import layer_groups, select_layers
from infljax.models.io import CONFIG_FILE, load_model
from infljax.multihost import is_main, on_main
from infljax.pipeline import stage, write_json
from infljax.workdir import corpus_dir, factors_dir, model_dir, recorded_args

PARTS_COVARIANCE, PARTS_LAMBDAS = "covariance", "lambdas"
GROUP_LAYERS_FILE = "layers.json"  # a group's layer paths, beside its partition sums


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """Which corpus rows are fitted and how they are cut.

    Attributes:
      num_documents: rows used (a seeded random subset, in corpus order); 0 = every row.
      batch_size: sequences per step over all devices (divisible by the mesh's data axis).
      partitions: contiguous parts of the rows; each part's sums are saved when it completes,
        so an interrupted fit resumes at the next part. Results do not depend on it.
      layer_groups: contiguous groups of the tracked layers fitted one after the other, each
        with both passes over all the rows, so a step holds one group's factor state (sums,
        eigenbases, captured `a` and `g`); at most the number of tracked layers
        (`layer_groups`). Results do not depend on it.

    Where the parameters and factor state live (config.mesh.params) is the `Placement` passed
    beside the plan; results do not depend on it either.
    """

    num_documents: int = 0
    batch_size: int = 64
    partitions: int = 4
    layer_groups: int = 1

    def __post_init__(self):
        if self.num_documents < 0:
            raise ValueError(f"factors.num_documents must be >= 0, got {self.num_documents}")
        for name in ("batch_size", "partitions", "layer_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"factors.{name} must be positive, got {getattr(self, name)}")


def plan_rows(num_rows: int, plan: FitPlan, seed: int) -> np.ndarray:
    """Sorted corpus rows to fit: all, or a seeded subset of `plan.num_documents`."""
    if plan.num_documents == 0 or plan.num_documents >= num_rows:
        return np.arange(num_rows)
    return np.sort(np.random.default_rng(seed).choice(num_rows, plan.num_documents, replace=False))


def stage_args(config: ConfigDict) -> tuple[FactorArgs, FitPlan, MeshArgs]:
    """The stage's typed arguments (checked: also the batch against the devices)."""
    section = config.factors
    args = FactorArgs(fisher=section.fisher, seed=section.seed, lambda_chunk=section.lambda_chunk)
    mesh_args = MeshArgs(**config.mesh.to_dict())
    plan = FitPlan(
        num_documents=section.num_documents,
        batch_size=section.batch_size,
        partitions=section.partitions,
        layer_groups=section.layer_groups,
    )
    _check_batch(plan, mesh_args.data_size(jax.device_count()))
    return args, plan, mesh_args


@stage("factors", check=stage_args)
def run(config: ConfigDict, workdir: Path) -> None:
    args, plan, mesh_args = stage_args(config)
    corpus = load_corpus(corpus_dir(workdir))
    placement = make_placement(mesh_args)
    for name in config.models:
        directory = model_dir(workdir, name)
        if not (directory / CONFIG_FILE).exists():
            logging.warning(
                "factors %s: no trained model in %s (run pretrain); skipped", name, directory
            )
            continue
        dtype = config.get("param_dtype", "")
        model = load_model(directory, dtype or None)
        layers = select_layers(model, tuple(config.factors.layers))
        fit_model_factors(
            name,
            model,
            layers,
            corpus,
            plan,
            args,
            placement,
            factors_dir(workdir, name),
            overwrite=config.overwrite,
            model_record=model_record(directory) | ({"param_dtype": dtype} if dtype else {}),
            inputs={"model": directory, "corpus": corpus_dir(workdir)},
        )


def model_record(directory: Path) -> dict:
    """What identifies a model directory's parameters: its config and its pretrain arguments."""
    record = {"config": json.loads((Path(directory) / CONFIG_FILE).read_text())}
    if (pretrain := recorded_args(directory)) is not None:
        record["pretrain"] = pretrain
    return record


def fit_model_factors(
    name: str,
    model: nnx.Module,
    layers: Sequence[str],
    corpus: TokenizedCorpus,
    plan: FitPlan,
    args: FactorArgs,
    placement: Placement,
    out: Path,
    *,
    overwrite: bool = False,
    model_record: dict | None = None,
    inputs: dict[str, Path] | None = None,
    stop_after: int | None = None,
) -> bool:
    """Fit and save the factors of `layers`; resume from `out`'s completed partitions.
    `inputs`: where the model and corpus were read (`infljax.checkpoints.begin_stage`).

    `stop_after` returns after that many newly computed partitions, counted over both passes of
    every layer group (time-sliced jobs, resume tests). Returns True when the factors are
    complete.
    """
    out = Path(out)
    groups = layer_groups(layers, plan.layer_groups)
    record = {
        "model": model_record or {},
        "corpus": {"documents": corpus.num_documents, "tokens": corpus.num_tokens},
        "layers": list(layers),
        # batch_size, lambda_chunk and layer_groups are left out: results do not depend on them,
        # so a fit may resume with others (e.g. on other hardware; the partial sums are stored
        # by the layers they hold, see the module docstring).
        "factors": {"fisher": args.fisher, "seed": args.seed},
        "plan": {"num_documents": plan.num_documents, "partitions": plan.partitions},
    }
    if inputs:  # the model and corpus are recorded by where they were read
        del record["model"], record["corpus"]
    if begin_stage(out, record, inputs=inputs, overwrite=overwrite):
        logging.info("factors %s: up to date in %s", name, out)
        return True
    check_finite_parameters(model)
    _check_batch(plan, placement.data_size)
    _report_memory(name, model, layers, plan, args, placement, corpus.max_length)
    t0 = time.perf_counter()
    fit = _Fit(name, model, tuple(groups), corpus, plan, args, placement, out, _Budget(stop_after))
    counts = fit.run()
    if counts is None:
        return False
    finish_factors(out, layers)
    write_json(
        out / "fit.json",
        {
            "tokens": counts.tokens,
            "sequences": counts.sequences,
            "layers": list(layers),
            "layer_groups": plan.layer_groups,
            "seconds_last_run": round(time.perf_counter() - t0, 1),
        },
    )
    finish_stage(out)
    on_main(_remove_partials, out)
    logging.info(
        "factors %s: %d layers in %d groups on %d sequences",
        name,
        len(layers),
        len(groups),
        counts.sequences,
    )
    return True


@dataclasses.dataclass
class _Budget:
    """Partitions this run may still compute (None: unlimited)."""

    remaining: int | None

    def take(self) -> bool:
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


@dataclasses.dataclass
class _Fit:
    """The partitioned two-pass fit of one model, group by group (the stage's loop; the math is
    in curvature)."""

    name: str
    model: nnx.Module
    groups: tuple[tuple[str, ...], ...]
    corpus: TokenizedCorpus
    plan: FitPlan
    args: FactorArgs
    placement: Placement
    out: Path
    budget: _Budget

    def run(self) -> Counts | None:
        """Fit and save every group's layers not saved yet (`save_layer_factors`: a host holds
        one group's factors at a time); the fit's counts, or None when the budget ran out."""
        rows = plan_rows(self.corpus.num_documents, self.plan, self.args.seed)
        parts = np.array_split(rows, self.plan.partitions)
        saved = on_main(saved_layers, self.out)  # decided once, by process 0
        counts = next(iter(saved.values()), None)
        for group, layers in enumerate(self.groups):
            if all(p in saved for p in layers):
                continue
            fitted = self._fit_group(group, parts)
            if fitted is None:
                return None
            factors, counts = fitted
            save_layer_factors(self.out, factors, counts)
        return counts

    def _fit_group(self, group: int, parts: list[np.ndarray]) -> tuple[Factors, Counts] | None:
        """One group's covariance pass, eigendecomposition and lambda pass: (factors, counts)."""
        cov = self._partitions(group, parts, None)
        if cov is None:
            return None
        bases = eigendecompose(cov)
        lam = self._partitions(group, parts, bases)
        if lam is None:
            return None
        return build_factors(cov, bases, lam), cov.counts  # the same rows, counts, every group

    def _compute(self, layers, rows: np.ndarray, bases, progress) -> Statistics:
        local = process_rows(self.plan.batch_size, self.placement.mesh)
        batches = row_batches(self.corpus, rows, self.plan.batch_size, local, progress)
        common = dict(batches=batches, args=self.args, placement=self.placement)
        if bases is None:
            return covariance_pass(self.model, layers, **common)
        return lambda_pass(self.model, layers, bases, **common)

    def _partitions(self, group: int, parts, bases) -> Statistics | None:
        """One pass of `group` (covariance without `bases`, lambdas with them): the merged
        statistics of every partition, computing those not yet on disk."""
        layers = self.groups[group]
        kind = PARTS_COVARIANCE if bases is None else PARTS_LAMBDAS
        shapes, dtype = layer_shapes(self.model, layers), factor_dtype(self.model, layers)
        like = zero_covariance(shapes, dtype) if bases is None else zero_lambdas(shapes, dtype)
        directory = _partials_dir(self.out, kind, layers, len(self.groups))
        paths = [directory / f"part_{i:05d}" for i in range(len(parts))]
        stored = on_main(_stored, paths)  # decided once, by process 0
        done = sum(len(r) for r, here in zip(parts, stored, strict=True) if here)
        total = sum(len(r) for r in parts)
        results = []
        desc = f"{kind} {self.name}"
        if len(self.groups) > 1:
            desc += f" [group {group + 1}/{len(self.groups)}]"
        bar = tqdm(total=total, initial=done, desc=desc, mininterval=2.0, disable=not is_main())
        with bar:
            for rows, path, here in zip(parts, paths, stored, strict=True):
                if here:
                    results.append(load_statistics(path, like))
                    continue
                if not self.budget.take():
                    return None
                results.append(self._compute(layers, rows, bases, bar.update))
                path.parent.mkdir(parents=True, exist_ok=True)
                if len(self.groups) > 1:
                    write_json(directory / GROUP_LAYERS_FILE, list(layers))
                save_statistics(path, results[-1])
        return merge_all(results)


def _partials_dir(out: Path, kind: str, layers: Sequence[str], groups: int) -> Path:
    """Where a group's partition sums of `kind` lie: ``<out>/<kind>`` when one group holds every
    layer, else ``<out>/<kind>/group_<8 hex digits of the SHA-256 of the layers' paths>``."""
    if groups == 1:
        return out / kind
    digest = hashlib.sha256("\n".join(layers).encode()).hexdigest()[:8]
    return out / kind / f"group_{digest}"


def _stored(paths: list[Path]) -> list[bool]:
    return [statistics_exist(path) for path in paths]


def _remove_partials(out: Path) -> None:
    """The partitions' sums: resume data, no longer needed once the factors are complete."""
    for partial in (PARTS_COVARIANCE, PARTS_LAMBDAS):
        shutil.rmtree(out / partial, ignore_errors=True)


def _check_batch(plan: FitPlan, data: int) -> None:
    if plan.batch_size % data:
        raise ValueError(
            f"config.factors.batch_size={plan.batch_size} is not divisible by the mesh's data "
            f"axis ({data} devices); use a multiple of {data}"
        )


def _report_memory(name, model, layers, plan, args, placement, length) -> None:
    """Log both passes' per-device estimates for the layer group that needs the most (DESIGN
    §7b, `infljax.planning`); refuse, with the numbers, a plan that cannot fit the device (not
    checked where the backend does not say how much memory it has, e.g. CPU), naming the batch
    size or the number of layer groups that would fit."""
    shapes = planning.ModelShapes.of(model, layers)
    chunk = args.chunk_for(placement.mesh)
    work = planning.Workload(seq=length, lambda_chunk=chunk, fisher=args.fisher)
    layout = planning.Layout.of(placement)
    device = planning.device_memory_bytes()
    groups = plan.layer_groups
    settings = ("config.factors.batch_size", "config.factors.layer_groups")
    at = f" at batch {plan.batch_size} with {planning.HEADROOM:.0%} headroom"
    for fit_pass in ("covariance", "lambdas"):
        group, memory = planning.largest_group(
            fit_pass, shapes, groups, work, layout, plan.batch_size
        )
        of_groups = f" (the largest of {groups} layer groups)" if groups > 1 else ""
        logging.info("factors %s: %s%s", name, memory.summary(), of_groups)
        planning.check_groups(memory, group, shapes, groups, work, layout, device, settings, at)
