"""Throughput of factor fitting relative to plain forward+backward, and the IHVP accuracy table.

    python experiments/benchmark.py                      # demo small model and d_model=256 x 4
    python experiments/benchmark.py --presets=d256 --batch_size=64 --seq_len=256
    python experiments/benchmark.py --presets= --d_model=512 --num_layers=8 --num_heads=8 \\
        --d_ff=2048                                      # a custom model
    python experiments/benchmark.py --ihvp_table         # accuracy vs the exact damped Fisher

For each model, in one process on the same mesh (DESIGN §9): tokens/s of a plain
forward+backward (gradient of the summed NLL w.r.t. all parameters), of one covariance-pass step
and of one lambda-pass step (each compiled and warmed up first, then `--repeats` timed calls
ended by block_until_ready), one scoring step (Q=100 queries at rank 32, the contraction chosen
in the label; goal ≥ 0.7 on d_model ≥ 256), the ratios (goals: covariance ≥ 0.8, lambdas ≥ 0.5)
and the memory of each compiled step (arguments + outputs + temporaries, from XLA's memory
analysis) beside the planner's estimate of it (`infljax.planning.estimate`), plus the device's
peak where the backend reports one. Numbers are printed, never asserted.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from infljax import training
from infljax.curvature import (
    STRATEGIES,
    DampingArgs,
    FactorArgs,
    eigendecompose,
    exact,
    fit_factors,
    passes,
    precondition,
)
from infljax.curvature.state import Counts, Statistics, zero_covariance, zero_lambdas
from infljax.data.batches import RowBatch
from infljax.distributed import Placement, make_mesh, replicate, shard_batch
from infljax.influence.query_grads import LowRankQueries
from infljax.influence.scoring import ScoreArgs, make_plan, make_score_fn
from infljax.models.capture import DEFAULT_LAYERS, by_layer, select_layers
from infljax.models.decoder import Decoder, DecoderConfig, num_params
from infljax.models.losses import Batch, summed_nll
from infljax.planning import Layout, ModelShapes, Workload, compiled_bytes, estimate
from infljax.platform import setup

PRESETS = {
    # configs/demo.py's small model.
    "demo_small": dict(d_model=64, num_layers=2, num_heads=2, d_ff=256),
    # configs/demo.py's large model, the largest tiny checkpoint the pipeline trains.
    "demo_large": dict(d_model=96, num_layers=3, num_heads=4, d_ff=384),
    "d256": dict(d_model=256, num_layers=4, num_heads=4, d_ff=1024),
}

_PRESETS = flags.DEFINE_list("presets", ["demo_small", "d256"], f"Of {sorted(PRESETS)}.")
_D_MODEL = flags.DEFINE_integer("d_model", None, "Custom model (with the three below).")
_NUM_LAYERS = flags.DEFINE_integer("num_layers", 4, "Custom model: blocks.")
_NUM_HEADS = flags.DEFINE_integer("num_heads", 4, "Custom model: attention heads.")
_D_FF = flags.DEFINE_integer("d_ff", None, "Custom model: MLP width (default 4 d_model).")
_VOCAB = flags.DEFINE_integer("vocab_size", 512, "Vocabulary size.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 128, "Tokens per sequence (all real).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Sequences per step (over all devices).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per measurement.")
_CHUNK = flags.DEFINE_integer("lambda_chunk", 0, "FactorArgs.lambda_chunk (0 = auto).")
_LAYERS = flags.DEFINE_list("layers", list(DEFAULT_LAYERS), "Tracked-layer regexes.")
_DTYPE = flags.DEFINE_string("param_dtype", "float32", "Parameter dtype.")
_IHVP = flags.DEFINE_bool("ihvp_table", False, "Print the IHVP accuracy table instead.")
_SCORE_QUERIES = flags.DEFINE_integer("score_queries", 100, "Scoring: queries (DESIGN §9: 100).")
_SCORE_RANK = flags.DEFINE_integer("score_rank", 32, "Scoring: rank of the query gradients.")
_CONTRACTION = flags.DEFINE_string("contraction", "auto", "Scoring: auto | dense | lowrank.")
_PRECISION = flags.DEFINE_string(
    "matmul_precision", "highest", "Float32 matmuls, as config.matmul_precision: highest | default."
)


@dataclasses.dataclass(frozen=True)
class Measurement:
    name: str
    seconds_per_step: float
    tokens_per_step: int
    compiled_bytes: int | None
    planned_bytes: int | None = None  # `infljax.planning.estimate` of the same step
    compile_seconds: float | None = None  # tracing, lowering and XLA compilation of the step

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_step / self.seconds_per_step


def _compile(lower: Callable[[], jax.stages.Lowered]) -> tuple[jax.stages.Compiled, float]:
    """The compiled step of `lower()` and the seconds its tracing, lowering and compiling took
    (the persistent compilation cache is off in this process, so nothing is read back)."""
    t0 = time.perf_counter()
    compiled = lower().compile()
    return compiled, time.perf_counter() - t0


def _time(step, carry, repeats: int) -> tuple[float, object]:
    """Seconds per call of `carry = step(carry)` after one warm-up call."""
    carry = jax.block_until_ready(step(carry))
    t0 = time.perf_counter()
    for _ in range(repeats):
        carry = step(carry)
    jax.block_until_ready(carry)
    return (time.perf_counter() - t0) / repeats, carry


def benchmark_model(cfg: DecoderConfig, batch_size: int, repeats: int) -> list[Measurement]:
    """Forward+backward, covariance step, lambda step and scoring step of `cfg` on all devices."""
    mesh = make_mesh()
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    layers = select_layers(model, _LAYERS.value)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, cfg.vocab_size, (batch_size, cfg.max_length)).astype(np.int32)
    batch = Batch.from_documents(tokens, np.full(batch_size, cfg.max_length))
    row_batch = shard_batch(RowBatch(np.arange(batch_size, dtype=np.int32), batch), mesh)
    graphdef, params = nnx.split(model)
    params = replicate(params, mesh)
    out = [_forward_backward(graphdef, params, row_batch.batch, repeats, batch.inputs.size)]
    fit = _FitSteps(model, layers, graphdef, params, row_batch, mesh, repeats)
    covariance, sums = fit.covariance()
    out += [covariance, fit.lambdas(sums)]
    out.append(_scoring(model, layers, graphdef, params, row_batch.batch, mesh, repeats))
    return out


@dataclasses.dataclass(frozen=True)
class _FitSteps:
    """Times one covariance-pass and one lambda-pass step on a fixed batch."""

    model: Decoder
    layers: tuple[str, ...]
    graphdef: nnx.GraphDef
    params: nnx.State
    row_batch: RowBatch
    mesh: jax.sharding.Mesh
    repeats: int

    @property
    def chunk(self) -> int:
        return FactorArgs(lambda_chunk=_CHUNK.value).chunk_for(self.mesh)

    @property
    def static(self) -> dict:
        fisher = FactorArgs().fisher
        placement = Placement(self.mesh)
        return dict(graphdef=self.graphdef, layers=self.layers, fisher=fisher, placement=placement)

    def _zeros(self, zero_fn):
        return passes.zero_sums(zero_fn, self.model, self.layers, Placement(self.mesh))

    def covariance(self) -> tuple[Measurement, dict]:
        """The measurement and the sums (their eigenbases feed the lambda step)."""
        seed, rb, params = jnp.asarray(0, jnp.uint32), self.row_batch, self.params
        sums = self._zeros(zero_covariance)
        step, compiling = _compile(
            lambda: passes.covariance_step.lower(params, sums, seed, rb, **self.static)
        )
        seconds, sums = _time(lambda s: step(params, s, seed, rb)[0], sums, self.repeats)
        n = int(rb.batch.inputs.size)
        planned = _planned("covariance", self.model, self.layers, self.mesh, rb.batch)
        cost = Measurement("covariance", seconds, n, compiled_bytes(step), planned, compiling)
        return cost, sums

    def lambdas(self, covariance_sums: dict) -> Measurement:
        seed, rb, params = jnp.asarray(0, jnp.uint32), self.row_batch, self.params
        n = int(rb.batch.inputs.size)
        counts = Counts(n, int(rb.rows.size))
        bases = eigendecompose(Statistics(by_layer(jax.device_get(covariance_sums)), counts))
        bases, sums = replicate(bases, self.mesh), self._zeros(zero_lambdas)
        step, compiling = _compile(
            lambda: passes.lambda_step.lower(
                params, bases, sums, seed, rb, chunk=self.chunk, **self.static
            )
        )
        seconds, _ = _time(lambda s: step(params, bases, s, seed, rb)[0], sums, self.repeats)
        planned = _planned(
            "lambdas", self.model, self.layers, self.mesh, rb.batch, lambda_chunk=self.chunk
        )
        return Measurement("lambdas", seconds, n, compiled_bytes(step), planned, compiling)


def _scoring(model, layers, graphdef, params, batch: Batch, mesh, repeats: int) -> Measurement:
    """One scoring step: capture + contraction with Q random rank-r query factors per layer
    (the values do not matter for speed); the label names the contraction(s) chosen."""
    rng = np.random.default_rng(0)
    dtype = passes.factor_dtype(model, layers)
    q, r = _SCORE_QUERIES.value, _SCORE_RANK.value
    queries = {
        p: LowRankQueries(
            jnp.asarray(rng.normal(size=(q, o, min(r, o, i))), dtype),
            jnp.asarray(rng.normal(size=(q, i, min(r, o, i))), dtype),
        )
        for p, (o, i) in passes.layer_shapes(model, layers).items()
    }
    b, t = batch.inputs.shape
    score_args = ScoreArgs(batch_size=b, contraction=_CONTRACTION.value)
    plan, choices = make_plan(queries, score_args, t)
    plan = replicate(plan, mesh)
    score_fn = make_score_fn(graphdef, tuple(layers), Placement(mesh))
    compiled, compiling = _compile(lambda: score_fn.lower(params, batch, plan, None))
    seconds, _ = _time(lambda _: compiled(params, batch, plan, None), None, repeats)
    label = f"scores Q={q} r={r} ({'+'.join(sorted(set(choices.values())))})"
    planned = _planned(
        "scores",
        model,
        layers,
        mesh,
        batch,
        choices,
        queries=q,
        rank=r,
        contraction=score_args.contraction,
    )
    return Measurement(label, seconds, b * t, compiled_bytes(compiled), planned, compiling)


def _planned(step, model, layers, mesh, batch: Batch, choices=None, **work) -> int:
    """The planner's per-device bytes for the step being timed (`infljax.planning`)."""
    b, t = batch.inputs.shape
    workload = Workload(seq=t, fisher=FactorArgs().fisher, **work)
    shapes = ModelShapes.of(model, layers)
    return estimate(step, shapes, workload, Layout.of(Placement(mesh)), b, choices).total


def _forward_backward(graphdef, params, batch: Batch, repeats: int, n_tokens: int) -> Measurement:
    def grads(params, batch):
        return jax.grad(lambda p: summed_nll(nnx.merge(graphdef, p)(batch.inputs), batch))(params)

    compiled, compiling = _compile(lambda: jax.jit(grads).lower(params, batch))
    seconds, _ = _time(lambda _: compiled(params, batch), None, repeats)
    return Measurement(
        "forward+backward", seconds, n_tokens, compiled_bytes(compiled), None, compiling
    )


def _print_table(title: str, measurements: list[Measurement]) -> None:
    base = measurements[0].tokens_per_second
    print(f"\n{title}")
    print(
        f"  {'stage':<32}{'tokens/s':>12}{'ratio':>8}{'compiled MiB':>15}{'planned MiB':>14}"
        f"{'compile s':>11}"
    )
    for m in measurements:
        mib = [
            "n/a" if n is None else f"{n / 2**20:.1f}" for n in (m.compiled_bytes, m.planned_bytes)
        ]
        ratio = m.tokens_per_second / base
        compiling = "n/a" if m.compile_seconds is None else f"{m.compile_seconds:.1f}"
        print(
            f"  {m.name:<32}{m.tokens_per_second:>12.0f}{ratio:>8.2f}{mib[0]:>15}{mib[1]:>14}"
            f"{compiling:>11}"
        )


def _print_peaks() -> None:
    stats = jax.local_devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        print(f"device peak (whole process): {stats['peak_bytes_in_use'] / 2**20:.1f} MiB")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"host peak RSS (whole process): {rss:.0f} MiB")


def model_configs() -> dict[str, DecoderConfig]:
    shapes = {name: PRESETS[name] for name in _PRESETS.value if name}
    if _D_MODEL.value is not None:
        d_ff = _D_FF.value or 4 * _D_MODEL.value
        shapes["custom"] = dict(
            d_model=_D_MODEL.value,
            num_layers=_NUM_LAYERS.value,
            num_heads=_NUM_HEADS.value,
            d_ff=d_ff,
        )
    common = dict(vocab_size=_VOCAB.value, max_length=_SEQ_LEN.value, param_dtype=_DTYPE.value)
    return {name: DecoderConfig(**shape, **common) for name, shape in shapes.items()}


def _counting_corpus(n: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows counting from a random start in steps of 1-3 (ids 1..15): a learnable toy task."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, length + 1, size=n)
    start, step = rng.integers(0, 15, size=(n, 1)), rng.integers(1, 4, size=(n, 1))
    tokens = ((start + step * np.arange(length)[None]) % 15 + 1).astype(np.int32)
    tokens[np.arange(length)[None, :] >= lengths[:, None]] = 0
    return tokens, lengths


def _trained_tiny_model(cfg: DecoderConfig, steps: int) -> Decoder:
    graphdef, params = nnx.split(Decoder(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    args = training.TrainArgs(steps=steps, warmup_steps=10, learning_rate=1e-2, weight_decay=0.0)
    tx = training.make_optimizer(args)
    opt_state, step = tx.init(params), training.make_train_step(graphdef, tx)
    batch = Batch.from_documents(*_counting_corpus(256, cfg.max_length, seed=1))
    for _ in range(steps):
        params, opt_state, _ = step(params, opt_state, batch)
    return nnx.merge(graphdef, params)


def print_ihvp_table(
    num_fit: int = 1024, num_queries: int = 32, scales: tuple[float, ...] = (0.1, 1.0)
) -> None:
    """Each strategy's IHVP against the exact (F + λI)⁻¹ v on a trained tiny model.

    F: exact per-layer Fisher (true Fisher, the fit's own sampled labels) over the fitting
    sequences; λ = scale × mean eigenvalue of F (= scale × mean EK-FAC lambda), the same absolute
    λ for every strategy; v: gradients of held-out sequences (real labels, "queries") and Gaussian
    vectors. Columns: relative error ‖ihvp − exact‖/‖exact‖, cosine(ihvp, exact) and, for
    queries, the Pearson correlation of the scores ⟨ihvp, G_m⟩ over the fitting sequences m with
    the exact scores; means over layers and vectors.
    """
    cfg = DecoderConfig(
        vocab_size=16,
        d_model=16,
        num_layers=2,
        num_heads=2,
        d_ff=16,
        max_length=8,
        param_dtype="float64",
    )
    model = _trained_tiny_model(cfg, steps=200)
    layers = select_layers(model)
    tokens, lengths = _counting_corpus(num_fit + num_queries, cfg.max_length, seed=2)
    fit = Batch.from_documents(tokens[:num_fit], lengths[:num_fit])
    queries = Batch.from_documents(tokens[num_fit:], lengths[num_fit:])
    args = FactorArgs(fisher="true", seed=0, lambda_chunk=8)
    one_device = Placement(make_mesh(devices=jax.devices()[:1]))
    factors = fit_factors(model, layers, [fit], args, one_device)
    targets = exact.fisher_targets(model, fit, np.arange(num_fit), args.seed)
    grads = exact.per_sequence_gradients(model, fit, targets, layers)
    query_grads = exact.per_sequence_gradients(model, queries, queries.targets, layers)
    sequences = int(np.sum(np.any(fit.mask, axis=1)))
    for scale in scales:
        rng = np.random.default_rng(0)
        results = {s: {"queries": [], "gaussian": []} for s in STRATEGIES}
        for path in layers:
            fisher = exact.exact_fisher(grads[path], sequences)
            damping = DampingArgs(absolute=scale * float(np.trace(fisher)) / len(fisher))
            gaussian = rng.normal(size=query_grads[path].shape)
            for kind, v in (("queries", query_grads[path]), ("gaussian", gaussian)):
                want = exact.exact_ihvp(fisher, v, damping.absolute)
                for s in STRATEGIES:
                    got = np.asarray(precondition(s, factors[path], v, damping))
                    results[s][kind].append(_agreement(got, want, grads[path]))
        print(
            f"\nIHVP vs exact damped Fisher inverse: tiny decoder d_model={cfg.d_model} "
            f"d_ff={cfg.d_ff} trained 200 steps, {num_fit} fitting sequences, {num_queries} "
            f"vectors, λ = {scale} × mean eigenvalue of F, mean over {len(layers)} MLP layers"
        )
        _print_agreement(results)


def _print_agreement(results: dict) -> None:
    print(
        f"  {'strategy':<10}{'queries: rel.err':>18}{'cosine':>8}{'score corr':>12}"
        f"{'gaussian: rel.err':>19}{'cosine':>8}"
    )
    for s, cells in results.items():
        q, g = (np.mean(cells[k], axis=0) for k in ("queries", "gaussian"))
        print(f"  {s:<10}{q[0]:>18.3f}{q[1]:>8.3f}{q[2]:>12.3f}{g[0]:>19.3f}{g[1]:>8.3f}")


def _agreement(got: np.ndarray, want: np.ndarray, train_grads: np.ndarray) -> list[float]:
    """[relative error, cosine, score correlation], each a mean over the vectors."""
    got, want = got.reshape(len(got), -1), want.reshape(len(want), -1)
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    train = train_grads.reshape(len(train_grads), -1)
    corr = [np.corrcoef(train @ x, train @ y)[0, 1] for x, y in zip(got, want, strict=True)]
    return [
        float(np.mean(np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1))),
        float(np.mean(np.sum(got * want, axis=1) / norms)),
        float(np.mean(corr)),
    ]


def main(argv):
    del argv
    setup(enable_x64=_IHVP.value)
    if _IHVP.value:
        print_ihvp_table()
        return
    print(
        f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"float32 matmuls: {_PRECISION.value}"
    )
    with jax.default_matmul_precision(_PRECISION.value):
        _benchmark_all()
    _print_peaks()


def _benchmark_all() -> None:
    for name, cfg in model_configs().items():
        n = num_params(nnx.eval_shape(lambda cfg=cfg: Decoder(cfg, rngs=nnx.Rngs(0))))
        title = (
            f"{name}: d_model={cfg.d_model} layers={cfg.num_layers} d_ff={cfg.d_ff} "
            f"params={n:,} batch={_BATCH.value}x{cfg.max_length} {cfg.param_dtype}"
        )
        _print_table(title, benchmark_model(cfg, _BATCH.value, _REPEATS.value))


if __name__ == "__main__":
    app.run(main)
