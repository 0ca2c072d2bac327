"""One model's resumable, grouped EK-FAC fit into a factors directory (`FactorFit`).

`fit_factors` (`infljax.curvature.passes`) is the math in memory: a covariance pass, the
eigendecomposition and a lambda pass over a list of batches. `FactorFit` runs the same passes
over the rows of a corpus cut into partitions, saving each partition's sums as it completes,
group of layers by group of layers, so that an interrupted fit resumes where it stopped; it is
what the factors stage runs per model.

``<out>/`` holds ``args.json`` (the fit's arguments), ``layers/`` + ``factors.json`` (the fitted
factors, a layer per directory, written as each group of layers completes;
`infljax.curvature.open_factors` / `load_factors` read them), ``fit.json`` (counts, layer
groups, time) and, while fitting, the partial sums of each data partition (removed once the
factors are complete).

The tracked layers are fitted in `FitPlan.layer_groups` contiguous groups (`layer_groups`): each
group has its own covariance pass, eigendecomposition and lambda pass over the same rows, which
capture only the group's layers, so a step holds one group's factor state. A layer's sums do not
depend on which layers share its pass, so the factors do not depend on the grouping, and the
grouping is left out of the fit's arguments: like the batch size it may change on resume. The
partial sums therefore lie in directories named by the layers they hold, never by a group's
index: ``covariance/part_*`` and ``lambdas/part_*`` with one group (every layer; the layout of
fits made before groups existed), ``covariance/group_<hash>/part_*`` and
``lambdas/group_<hash>/part_*`` with several, <hash> being 8 hex digits of the SHA-256 of the
group's layer paths, which the directory's ``layers.json`` lists. A fit resumed with another
grouping reuses the sums of the groups it shares with the old one and recomputes the others.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from absl import logging
from flax import nnx
from tqdm import tqdm

from infljax import planning
from infljax.checkpoints import begin_stage, finish_stage
from infljax.config import free, read_split, recorded
from infljax.curvature.eigen import eigendecompose
from infljax.curvature.passes import (
    FactorArgs,
    check_finite_parameters,
    covariance_pass,
    factor_dtype,
    lambda_pass,
    layer_shapes,
)
from infljax.curvature.state import (
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
from infljax.data.batches import row_batches
from infljax.data.corpus import TokenizedCorpus
from infljax.distributed import Placement, process_rows
from infljax.models.capture import layer_groups
from infljax.multihost import is_main, on_main
from infljax.workdir import write_json

PARTS_COVARIANCE, PARTS_LAMBDAS = "covariance", "lambdas"
GROUP_LAYERS_FILE = "layers.json"  # a group's layer paths, beside its partition sums
_ZEROS = {PARTS_COVARIANCE: zero_covariance, PARTS_LAMBDAS: zero_lambdas}


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
    batch_size: int = free(64)
    partitions: int = 4
    layer_groups: int = free(1)

    def __post_init__(self):
        if self.num_documents < 0:
            raise ValueError(f"factors.num_documents must be >= 0, got {self.num_documents}")
        for name in ("batch_size", "partitions", "layer_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"factors.{name} must be positive, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class FactorLayers:
    """layers: regexes (full match) of the tracked layers: fitted here, scored by the scores
    stage."""

    layers: tuple[str, ...]


def factors_section(section) -> tuple[FactorArgs, FitPlan, FactorLayers]:
    """``config.factors``, typed: the passes' arguments, the plan and the tracked layers."""
    return read_split(section, (FactorArgs, FitPlan, FactorLayers), "factors")


def plan_rows(num_rows: int, plan: FitPlan, seed: int) -> np.ndarray:
    """Sorted corpus rows to fit: all, or a seeded subset of `plan.num_documents`."""
    if plan.num_documents == 0 or plan.num_documents >= num_rows:
        return np.arange(num_rows)
    return np.sort(np.random.default_rng(seed).choice(num_rows, plan.num_documents, replace=False))


@dataclasses.dataclass(frozen=True)
class FactorFit:
    """Fit and save the factors of `layers` of `model` on `corpus`, into `out`.

    `placement`: the mesh, and where the parameters and sums live (results do not depend on
    it). `model_record` identifies the model in the fit's arguments, unless `inputs` (where
    the model and corpus were read) does (`infljax.checkpoints.begin_stage`). Complete factors
    with the same arguments are kept (`overwrite` refits them; other arguments conflict).
    """

    name: str
    model: nnx.Module
    layers: tuple[str, ...]
    corpus: TokenizedCorpus
    plan: FitPlan
    args: FactorArgs
    placement: Placement
    out: Path
    overwrite: bool = False
    model_record: dict | None = None
    inputs: dict[str, Path] | None = None

    def run(self) -> None:
        """Fit what is not on disk yet and write the factors (nothing when complete)."""
        for _ in self.partitions():
            pass

    def partitions(self) -> Iterator[Path]:
        """Compute the partitions not on disk yet, over both passes of every layer group,
        yielding each one's path once saved; after the last, write the factors and fit.json and
        mark `out` complete.

        Stopping the iteration early (a time-sliced job) loses nothing: a later fit resumes
        from the saved layer groups and partitions.
        """
        out, plan, name = Path(self.out), self.plan, self.name
        groups = layer_groups(self.layers, plan.layer_groups)  # refuses too many groups
        if begin_stage(out, self._record(), inputs=self.inputs, overwrite=self.overwrite):
            logging.info("factors %s: up to date in %s", name, out)
            return
        check_finite_parameters(self.model)
        check_batch(plan, self.placement.data_size)
        report_memory(name, self.model, self.layers, plan, self.args, self.placement,
                      self.corpus.max_length)  # fmt: skip
        started = time.perf_counter()
        rows = plan_rows(self.corpus.num_documents, plan, self.args.seed)
        parts = np.array_split(rows, plan.partitions)
        saved = on_main(saved_layers, out)  # decided once, by process 0
        counts = next(iter(saved.values()), None)
        for group, layers in enumerate(groups):
            if all(p in saved for p in layers):
                continue
            label = "" if len(groups) == 1 else f" [group {group + 1}/{len(groups)}]"
            where = functools.partial(_partials_dir, out, layers=layers, groups=len(groups))
            cov = yield from self._pass(
                PARTS_COVARIANCE, layers, parts, where(PARTS_COVARIANCE), label, self._covariance
            )
            bases = eigendecompose(cov)
            lambdas = functools.partial(self._lambdas, bases)
            lam = yield from self._pass(
                PARTS_LAMBDAS, layers, parts, where(PARTS_LAMBDAS), label, lambdas
            )
            counts = cov.counts  # the same rows, so the same counts, in every group
            save_layer_factors(out, build_factors(cov, bases, lam), counts)
        finish_factors(out, self.layers)
        fit = {
            "tokens": counts.tokens,
            "sequences": counts.sequences,
            "layers": list(self.layers),
            "layer_groups": plan.layer_groups,
            "seconds_last_run": round(time.perf_counter() - started, 1),
        }
        on_main(write_json, out / "fit.json", fit)
        finish_stage(out)
        on_main(_remove_partials, out)
        logging.info(
            "factors %s: %d layers in %d groups on %d sequences",
            name,
            len(self.layers),
            len(groups),
            counts.sequences,
        )

    def _record(self) -> dict:
        record = {
            "model": self.model_record or {},
            "corpus": {"documents": self.corpus.num_documents, "tokens": self.corpus.num_tokens},
            "layers": list(self.layers),
            # without the free fields (batch_size, lambda_chunk, layer_groups): a fit may resume
            # with others (e.g. on other hardware; the partial sums are stored by the layers
            # they hold, see the module docstring)
            "factors": recorded(self.args),
            "plan": recorded(self.plan),
        }
        if self.inputs:  # the model and corpus are recorded by where they were read
            del record["model"], record["corpus"]
        return record

    def _batches(self, rows: np.ndarray, progress: Callable[[int], None]):
        local = process_rows(self.plan.batch_size, self.placement.mesh)
        return row_batches(self.corpus, rows, self.plan.batch_size, local, progress)

    def _covariance(self, layers, rows: np.ndarray, progress) -> Statistics:
        batches = self._batches(rows, progress)
        return covariance_pass(self.model, layers, batches, self.args, self.placement)

    def _lambdas(self, bases, layers, rows: np.ndarray, progress) -> Statistics:
        batches = self._batches(rows, progress)
        return lambda_pass(self.model, layers, bases, batches, self.args, self.placement)

    def _pass(
        self, kind: str, layers, parts, directory: Path, label: str, compute
    ) -> Iterator[Path]:
        """One pass (`kind`) of a group's `layers` over every partition (`compute(layers,
        rows, progress)`: its statistics), computing and saving those not yet in `directory`,
        yielding each one's path; returns the merged statistics."""
        shapes, dtype = layer_shapes(self.model, layers), factor_dtype(self.model, layers)
        like = _ZEROS[kind](shapes, dtype)
        paths = [directory / f"part_{i:05d}" for i in range(len(parts))]
        stored = on_main(_stored, paths)  # decided once, by process 0
        done = sum(len(r) for r, here in zip(parts, stored, strict=True) if here)
        total = sum(len(r) for r in parts)
        results = []
        desc = f"{kind} {self.name}{label}"
        bar = tqdm(total=total, initial=done, desc=desc, mininterval=2.0, disable=not is_main())
        with bar:
            for rows, path, here in zip(parts, paths, stored, strict=True):
                if here:
                    results.append(load_statistics(path, like))
                    continue
                results.append(compute(layers, rows, bar.update))
                path.parent.mkdir(parents=True, exist_ok=True)
                if directory.name != kind:  # one of several groups
                    on_main(write_json, directory / GROUP_LAYERS_FILE, list(layers))
                save_statistics(path, results[-1])
                yield path
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


def check_batch(plan: FitPlan, data: int) -> None:
    if plan.batch_size % data:
        raise ValueError(
            f"config.factors.batch_size={plan.batch_size} is not divisible by the mesh's data "
            f"axis ({data} devices); use a multiple of {data}"
        )


def report_memory(name, model, layers, plan, args, placement, length) -> None:
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
