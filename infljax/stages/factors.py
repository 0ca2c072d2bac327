"""Stage `factors`: fit EK-FAC factors for every trained model in the config.

Per model ``<workdir>/factors/<name>/`` holds ``args.json`` (stage arguments), ``arrays/`` +
``factors.json`` (the fitted factors; `infljax.curvature.load_factors` reads them), ``fit.json``
(counts, time) and, while fitting, ``covariance/part_*`` and ``lambdas/part_*``: the partial sums
of each data partition, so an interrupted fit resumes from its last completed partition (they are
removed once the factors are complete).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import jax
import numpy as np
from absl import logging
from flax import nnx
from ml_collections import ConfigDict
from tqdm import tqdm

from infljax import planning
from infljax.checkpoints import ARGS_FILE, begin_stage, finish_stage
from infljax.curvature.eigen import eigendecompose
from infljax.curvature.passes import (
    FactorArgs,
    RowBatch,
    check_finite_parameters,
    covariance_pass,
    factor_dtype,
    lambda_pass,
    layer_shapes,
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
    load_statistics,
    save_factors,
    save_statistics,
    statistics_exist,
)
from infljax.data.corpus import TokenizedCorpus, load_corpus, read_rows
from infljax.distributed import MeshArgs, make_mesh, process_rows
from infljax.models.capture import select_layers
from infljax.models.io import CONFIG_FILE, load_model
from infljax.models.losses import Batch
from infljax.multihost import is_main, on_main
from infljax.pipeline import stage, write_json
from infljax.workdir import corpus_dir, factors_dir, model_dir

PARTS_COVARIANCE, PARTS_LAMBDAS = "covariance", "lambdas"


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """Which corpus rows are fitted and how they are cut.

    Attributes:
      num_documents: rows used (a seeded random subset, in corpus order); 0 = every row.
      batch_size: sequences per step over all devices (divisible by the mesh's data axis).
      partitions: contiguous parts of the rows; each part's sums are saved when it completes,
        so an interrupted fit resumes at the next part. Results do not depend on it.
      placement: the parameters replicated or FSDP-split over the mesh (config.mesh.params;
        `infljax.distributed.place`). Results do not depend on it.
    """

    num_documents: int = 0
    batch_size: int = 64
    partitions: int = 4
    placement: str = "replicated"

    def __post_init__(self):
        if self.num_documents < 0:
            raise ValueError(f"FitPlan.num_documents must be >= 0, got {self.num_documents}")
        for name in ("batch_size", "partitions"):
            if getattr(self, name) < 1:
                raise ValueError(f"FitPlan.{name} must be positive, got {getattr(self, name)}")


def plan_rows(num_rows: int, plan: FitPlan, seed: int) -> np.ndarray:
    """Sorted corpus rows to fit: all, or a seeded subset of `plan.num_documents`."""
    if plan.num_documents == 0 or plan.num_documents >= num_rows:
        return np.arange(num_rows)
    return np.sort(np.random.default_rng(seed).choice(num_rows, plan.num_documents, replace=False))


def row_batches(
    corpus: TokenizedCorpus,
    rows: np.ndarray,
    batch_size: int,
    local: slice = slice(None),
    progress: Callable[[int], None] | None = None,
) -> Iterator[RowBatch]:
    """Fixed-shape batches of `rows`; the last is filled with zero-length rows of index -1.

    Each batch holds only the `local` rows of the global batch of `batch_size` (this process's,
    `infljax.distributed.process_rows`; default all), and only those are read from the corpus.
    `progress(n)` gets each global batch's number of real rows once the batch was taken.
    """
    for start in range(0, len(rows), batch_size):
        part = rows[start : start + batch_size]
        chunk = np.full(batch_size, -1, np.int64)
        chunk[: len(part)] = part
        ids = chunk[local]
        yield RowBatch(ids.astype(np.int32), Batch.from_documents(*read_rows(corpus, ids)))
        if progress is not None:
            progress(len(part))


@stage("factors")
def run(config: ConfigDict, workdir: Path) -> None:
    section = config.factors
    args = FactorArgs(fisher=section.fisher, seed=section.seed, lambda_chunk=section.lambda_chunk)
    mesh_args = MeshArgs(**config.mesh.to_dict())
    plan = FitPlan(
        num_documents=section.num_documents,
        batch_size=section.batch_size,
        partitions=section.partitions,
        placement=mesh_args.params,
    )
    corpus = load_corpus(corpus_dir(workdir))
    mesh = make_mesh(mesh_args)
    for name in config.models:
        directory = model_dir(workdir, name)
        if not (directory / CONFIG_FILE).exists():
            logging.warning(
                "factors %s: no trained model in %s (run pretrain); skipped", name, directory
            )
            continue
        dtype = config.get("param_dtype", "")
        model = load_model(directory, dtype or None)
        layers = select_layers(model, tuple(section.layers))
        fit_model_factors(
            name,
            model,
            layers,
            corpus,
            plan,
            args,
            mesh,
            factors_dir(workdir, name),
            overwrite=config.overwrite,
            model_record=model_record(directory) | ({"param_dtype": dtype} if dtype else {}),
        )


def model_record(directory: Path) -> dict:
    """What identifies a model directory's parameters: its config and its pretrain arguments."""
    record = {"config": json.loads((Path(directory) / CONFIG_FILE).read_text())}
    args_path = Path(directory) / ARGS_FILE
    if args_path.exists():
        record["pretrain"] = json.loads(args_path.read_text()).get("args")
    return record


def fit_model_factors(
    name: str,
    model: nnx.Module,
    layers: Sequence[str],
    corpus: TokenizedCorpus,
    plan: FitPlan,
    args: FactorArgs,
    mesh: jax.sharding.Mesh,
    out: Path,
    *,
    overwrite: bool = False,
    model_record: dict | None = None,
    stop_after: int | None = None,
) -> bool:
    """Fit and save the factors of `layers`; resume from `out`'s completed partitions.

    `stop_after` returns after that many newly computed partitions (time-sliced jobs, resume
    tests). Returns True when the factors are complete.
    """
    out = Path(out)
    record = {
        "model": model_record or {},
        "corpus": {"documents": corpus.num_documents, "tokens": corpus.num_tokens},
        "layers": list(layers),
        # batch_size and lambda_chunk are left out: results do not depend on them, so a fit may
        # resume with others (e.g. on other hardware).
        "factors": {"fisher": args.fisher, "seed": args.seed},
        "plan": {"num_documents": plan.num_documents, "partitions": plan.partitions},
    }
    if begin_stage(out, record, overwrite=overwrite):
        logging.info("factors %s: up to date in %s", name, out)
        return True
    check_finite_parameters(model)
    _check_batch(plan, mesh)
    _report_memory(name, model, layers, plan, args, mesh, corpus.max_length)
    t0 = time.perf_counter()
    fit = _Fit(name, model, tuple(layers), corpus, plan, args, mesh, out, _Budget(stop_after))
    factors = fit.run()
    if factors is None:
        return False
    save_factors(out, factors)
    counts = fit.counts
    write_json(
        out / "fit.json",
        {
            "tokens": counts.tokens,
            "sequences": counts.sequences,
            "layers": list(layers),
            "seconds_last_run": round(time.perf_counter() - t0, 1),
        },
    )
    finish_stage(out)
    on_main(_remove_partials, out)
    logging.info("factors %s: %d layers on %d sequences", name, len(layers), counts.sequences)
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
    """The partitioned two-pass fit of one model (the stage's loop; the math is in curvature)."""

    name: str
    model: nnx.Module
    layers: tuple[str, ...]
    corpus: TokenizedCorpus
    plan: FitPlan
    args: FactorArgs
    mesh: jax.sharding.Mesh
    out: Path
    budget: _Budget
    counts: Counts | None = None

    def run(self) -> Factors | None:
        """The factors, or None when the budget ran out first."""
        rows = plan_rows(self.corpus.num_documents, self.plan, self.args.seed)
        parts = np.array_split(rows, self.plan.partitions)
        shapes = layer_shapes(self.model, self.layers)
        dtype = factor_dtype(self.model, self.layers)
        cov = self._partitions(PARTS_COVARIANCE, parts, zero_covariance(shapes, dtype), None)
        if cov is None:
            return None
        bases = eigendecompose(cov)
        lam = self._partitions(PARTS_LAMBDAS, parts, zero_lambdas(shapes, dtype), bases)
        if lam is None:
            return None
        self.counts = cov.counts
        return build_factors(cov, bases, lam)

    def _compute(self, rows: np.ndarray, bases, progress) -> Statistics:
        local = process_rows(self.plan.batch_size, self.mesh)
        batches = row_batches(self.corpus, rows, self.plan.batch_size, local, progress)
        common = dict(batches=batches, args=self.args, mesh=self.mesh, progress=None)
        common["placement"] = self.plan.placement
        if bases is None:
            return covariance_pass(self.model, self.layers, **common)
        return lambda_pass(self.model, self.layers, bases, **common)

    def _partitions(self, kind: str, parts, like: dict, bases) -> Statistics | None:
        """Merged statistics of every partition, computing those not yet on disk."""
        paths = [self.out / kind / f"part_{i:05d}" for i in range(len(parts))]
        stored = on_main(_stored, paths)  # decided once, by process 0
        done = sum(len(r) for r, here in zip(parts, stored, strict=True) if here)
        total = sum(len(r) for r in parts)
        results = []
        desc = f"{kind} {self.name}"
        bar = tqdm(total=total, initial=done, desc=desc, mininterval=2.0, disable=not is_main())
        with bar:
            for rows, path, here in zip(parts, paths, stored, strict=True):
                if here:
                    results.append(load_statistics(path, like))
                    continue
                if not self.budget.take():
                    return None
                results.append(self._compute(rows, bases, bar.update))
                path.parent.mkdir(parents=True, exist_ok=True)
                save_statistics(path, results[-1])
        return merge_all(results)


def _stored(paths: list[Path]) -> list[bool]:
    return [statistics_exist(path) for path in paths]


def _remove_partials(out: Path) -> None:
    """The partitions' sums: resume data, no longer needed once the factors are complete."""
    for partial in (PARTS_COVARIANCE, PARTS_LAMBDAS):
        shutil.rmtree(out / partial, ignore_errors=True)


def _check_batch(plan: FitPlan, mesh: jax.sharding.Mesh) -> None:
    data = mesh.shape["data"]
    if plan.batch_size % data:
        raise ValueError(
            f"config.factors.batch_size={plan.batch_size} is not divisible by the mesh's data "
            f"axis ({data} devices); use a multiple of {data}"
        )


def _report_memory(name, model, layers, plan, args, mesh, length) -> None:
    """Log both passes' per-device estimates (DESIGN §7b, `infljax.planning`); refuse, with the
    numbers, a plan that cannot fit the device (not checked where the backend does not say how
    much memory it has, e.g. CPU)."""
    shapes = planning.ModelShapes.of(model, layers)
    work = planning.Workload(seq=length, lambda_chunk=args.chunk_for(mesh), fisher=args.fisher)
    layout = planning.Layout.of_mesh(mesh, plan.placement)
    device = planning.device_memory_bytes()
    for fit_pass in ("covariance", "lambdas"):
        memory = planning.estimate(fit_pass, shapes, work, layout, plan.batch_size)
        logging.info("factors %s: %s", name, memory.summary())
        planning.check_stage(memory, shapes, work, layout, device, "config.factors.batch_size")
