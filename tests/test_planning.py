"""The memory planner against XLA's compiled memory analysis, its refusals and its batch choice.

Each step (`planning.STEPS`) is compiled the way the stages (and experiments/benchmark.py) build it,
on a small float32 decoder, and its per-device bytes (arguments + outputs + temporaries -
aliased, XLA's `memory_analysis`) are compared with `planning.estimate`. Tolerance 25%: the
planner counts tensors from shapes, while XLA fuses elementwise work (never materialising some
of the tensors counted as activations), schedules buffers so that some die before the peak, and
keeps a few temporaries (layout copies, reduction scratch) that no shape formula names.
"""

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from infljax import planning, training
from infljax.curvature import DampingArgs, fit, passes
from infljax.curvature.state import Eigenbasis, LayerFactors, zero_covariance, zero_lambdas
from infljax.data.batches import RowBatch
from infljax.distributed import Placement, make_mesh, param_spec, replicate, shard_batch
from infljax.influence import query_grads
from infljax.influence import run as scoring_run
from infljax.influence.query_grads import LowRankQueries
from infljax.influence.scoring import ScoreArgs, make_plan, make_score_fn
from infljax.models.capture import select_layers
from infljax.models.decoder import Decoder, DecoderConfig
from infljax.models.losses import Batch

TOLERANCE = 0.25  # see the module docstring
SMALL = DecoderConfig(
    vocab_size=512, d_model=128, num_layers=2, num_heads=4, d_ff=512, max_length=128
)
BATCH, QUERIES, RANK = 8, 100, 32


@dataclasses.dataclass(frozen=True)
class Steps:
    """Compiles each stage's step for one model, batch and mesh; returns XLA's bytes."""

    cfg: DecoderConfig
    batch: int
    mesh: jax.sharding.Mesh
    rank: int = RANK
    contraction: str = "auto"
    placement: str = "replicated"  # config.mesh.params (factors, scores)

    @property
    def where(self) -> Placement:
        return Placement(self.mesh, self.placement)

    @property
    def model(self) -> Decoder:
        return Decoder(self.cfg, rngs=nnx.Rngs(0))

    def _row_batch(self) -> RowBatch:
        rng = np.random.default_rng(0)
        tokens = rng.integers(1, self.cfg.vocab_size, (self.batch, self.cfg.max_length))
        batch = Batch.from_documents(tokens.astype(np.int32), np.full(self.batch, tokens.shape[1]))
        rows = np.arange(self.batch, dtype=np.int32)
        return shard_batch(RowBatch(rows, batch), self.mesh)

    def pretrain(self) -> int:
        graphdef, params = nnx.split(self.model, nnx.Param)
        tx = training.make_optimizer(training.TrainArgs(steps=10, warmup_steps=1))
        params = replicate(params, self.mesh)
        opt_state = replicate(tx.init(params), self.mesh)
        step = training.make_train_step(graphdef, tx)
        return planning.compiled_bytes(
            step.lower(params, opt_state, self._row_batch().batch).compile()
        )

    def _fit_inputs(self):
        model = self.model
        layers = select_layers(model)
        graphdef, params = nnx.split(model)
        static = dict(graphdef=graphdef, layers=layers, fisher="true", placement=self.where)
        shapes, dtype = passes.layer_shapes(model, layers), passes.factor_dtype(model, layers)
        seed = jnp.asarray(0, jnp.uint32)
        return self._place(params), static, shapes, dtype, seed

    def _place(self, tree):
        return self.where.place(tree)

    def covariance(self) -> int:
        params, static, shapes, dtype, seed = self._fit_inputs()
        sums = passes.zero_sums(zero_covariance, self.model, static["layers"], self.where)
        step = passes.covariance_step.lower(params, sums, seed, self._row_batch(), **static)
        return planning.compiled_bytes(step.compile())

    def lambdas(self, chunk: int) -> int:
        params, static, shapes, dtype, seed = self._fit_inputs()
        bases = self._place({p: _basis(o, i, dtype) for p, (o, i) in shapes.items()})
        sums = passes.zero_sums(zero_lambdas, self.model, static["layers"], self.where)
        step = passes.lambda_step.lower(
            params, bases, sums, seed, self._row_batch(), chunk=chunk, **static
        )
        return planning.compiled_bytes(step.compile())

    def queries(self) -> int:
        """One chunk of queries: capture, then per layer gradients, EK-FAC preconditioning
        and SVD (`query_grads.make_query_plan_fn`)."""
        model = self.model
        layers = select_layers(model)
        graphdef, params = nnx.split(model)
        dtype = passes.factor_dtype(model, layers)
        factors = self._place(
            {p: _factors(o, i, dtype) for p, (o, i) in passes.layer_shapes(model, layers).items()}
        )
        args = query_grads.QueryArgs(rank=self.rank, batch_size=self.batch)
        fn = query_grads.make_query_plan_fn(
            graphdef, layers, self.where, "ekfac", DampingArgs(), args
        )
        rows = shard_batch(np.arange(self.batch, dtype=np.int32), self.mesh)
        step = fn.lower(self._place(params), self._row_batch().batch, rows, factors)
        return planning.compiled_bytes(step.compile())

    def scores(self) -> tuple[int, dict[str, str]]:
        model = self.model
        layers = select_layers(model)
        graphdef, params = nnx.split(model)
        dtype = passes.factor_dtype(model, layers)
        queries = {
            p: LowRankQueries(
                jnp.zeros((QUERIES, o, min(self.rank, o, i)), dtype),
                jnp.zeros((QUERIES, i, min(self.rank, o, i)), dtype),
            )
            for p, (o, i) in passes.layer_shapes(model, layers).items()
        }
        args = ScoreArgs(batch_size=self.batch, contraction=self.contraction)
        plan, choices = make_plan(queries, args, self.cfg.max_length)
        fn = make_score_fn(graphdef, layers, self.where)
        batch = self._row_batch().batch
        compiled = fn.lower(self._place(params), batch, self._place(plan), None)
        return planning.compiled_bytes(compiled.compile()), choices


def _basis(d_out: int, d_in: int, dtype) -> Eigenbasis:
    eye = lambda n: jnp.eye(n, dtype=dtype)  # noqa: E731
    return Eigenbasis(eye(d_in), jnp.ones(d_in, dtype), eye(d_out), jnp.ones(d_out, dtype))


def _factors(d_out: int, d_in: int, dtype) -> LayerFactors:
    b, ones = _basis(d_out, d_in, dtype), jnp.ones((d_out, d_in), dtype)
    count = jnp.asarray(1.0, dtype)  # tokens per sequence
    return LayerFactors(b.a_eigvecs, b.a_eigvals, b.s_eigvecs, b.s_eigvals, ones, ones, count)


def planned(step: str, steps: Steps, **work) -> planning.StepMemory:
    shapes = planning.ModelShapes.from_config(steps.cfg)
    defaults = dict(seq=steps.cfg.max_length, queries=QUERIES, rank=steps.rank)
    workload = planning.Workload(**(defaults | work))
    layout = planning.Layout.of(steps.where)
    return planning.estimate(step, shapes, workload, layout, steps.batch)


def _within(estimate: int, xla: int) -> bool:
    return abs(estimate - xla) <= TOLERANCE * xla


@pytest.fixture(scope="module")
def mesh2():
    return make_mesh(devices=jax.devices()[:2])


@pytest.mark.parametrize(
    "step, placement",
    [
        ("pretrain", "replicated"),
        ("covariance", "replicated"),
        ("covariance", "fsdp"),
        ("lambdas", "replicated"),
        ("lambdas", "fsdp"),
        ("queries", "replicated"),
        ("queries", "fsdp"),
    ],
)
def test_estimate_within_25_percent_of_xla(step, placement, mesh2):
    steps = Steps(SMALL, BATCH, mesh2, placement=placement)
    if step == "lambdas":
        xla, memory = steps.lambdas(chunk=2), planned(step, steps, lambda_chunk=2)
    else:
        xla, memory = getattr(steps, step)(), planned(step, steps)
    assert _within(memory.total, xla), (step, memory.lines(), xla)


@pytest.mark.parametrize("placement", ["replicated", "fsdp"])
def test_covariance_estimate_holds_for_a_deeper_model(placement, mesh2):
    # 4 blocks: with the whole model every layer's a and g are live when the statistics are
    # formed (counting one layer's, the estimate was 0.69 of XLA's).
    deeper = dataclasses.replace(SMALL, num_layers=4)
    steps = Steps(deeper, BATCH, mesh2, placement=placement)
    xla, memory = steps.covariance(), planned("covariance", steps)
    assert _within(memory.total, xla), (placement, memory.lines(), xla)


@pytest.mark.parametrize(
    "contraction, placement",
    [("auto", "replicated"), ("dense", "fsdp"), ("lowrank", "replicated"), ("lowrank", "fsdp")],
)
def test_scores_estimate_within_25_percent_of_xla(contraction, placement, mesh2):
    steps = Steps(SMALL, BATCH, mesh2, contraction=contraction, placement=placement)
    xla, choices = steps.scores()
    memory = planned("scores", steps, contraction=contraction)
    shapes = planning.ModelShapes.from_config(SMALL)
    work = planning.Workload(seq=SMALL.max_length, contraction=contraction)
    assert planning.plan_choices(shapes, work, BATCH) == choices  # make_plan's own choice
    assert _within(memory.total, xla), (contraction, memory.lines(), xla)


def test_fsdp_splits_parameters_and_factors_at_rest_and_the_step_gathers_a_layer(mesh2):
    shapes = planning.ModelShapes.from_config(SMALL)
    work = planning.Workload(seq=SMALL.max_length)
    layouts = {
        "replicated": planning.Layout.of(Placement(mesh2)),
        "fsdp": planning.Layout.of(Placement(mesh2, "fsdp")),
    }
    assert layouts["fsdp"] == planning.Layout(data=2, param_shards=2, factor_shards=2)
    parts = {
        name: dict(planning.estimate("lambdas", shapes, work, layout, BATCH).parts)
        for name, layout in layouts.items()
    }
    params = shapes.params * 4  # float32
    outside = params - SMALL.num_layers * shapes.block_params * 4  # embeddings, final norm
    square = [o * o + i * i + o + i for o, i in shapes.layers.values()]
    widest = max(2 * o * i for o, i in shapes.layers.values())
    assert parts["replicated"]["parameters"] == params and parts["replicated"]["gathered"] == 0
    assert parts["fsdp"]["parameters"] == params // 2  # at rest
    # the step gathers one block and what lies outside the blocks but the embedding, split over
    # the vocabulary and never gathered; or every device's last hidden states and their
    # gradient, whichever is larger
    assert planning.vocab_parallel(SMALL, 2)
    embedding = SMALL.vocab_size * SMALL.d_model * 4
    states = 2 * BATCH * SMALL.max_length * SMALL.d_model * 4
    assert parts["fsdp"]["gathered"] == max(shapes.block_params * 4 + outside - embedding, states)
    assert parts["replicated"]["eigenvectors"] == sum(square) * 4
    # at rest an array is split as `param_spec` splits it (the A factors here, d_in + 1 odd, stay
    # whole); the step gathers one layer's split arrays
    arrays = [[(o, o), (i, i), (o,), (i,)] for o, i in shapes.layers.values()]
    split = lambda shape: "data" in tuple(param_spec(shape, mesh2, "fsdp"))  # noqa: E731
    kept = sum(math.prod(a) // (2 if split(a) else 1) for layer in arrays for a in layer)
    gathered = max(sum(math.prod(a) for a in layer if split(a)) for layer in arrays)
    assert gathered < max(square)  # some arrays are not split
    assert parts["fsdp"]["eigenvectors"] == (kept + gathered) * 4
    for name in layouts:  # one layer's batch statistics at a time
        assert parts[name]["batch sums"] == widest * 4


def test_model_shapes_from_config_match_the_model():
    model = Decoder(SMALL, rngs=nnx.Rngs(0))
    layers = select_layers(model)
    concrete = planning.ModelShapes.of(model, layers)
    assert planning.ModelShapes.from_config(SMALL) == concrete
    assert concrete.layers == passes.layer_shapes(model, layers)
    assert concrete.params == sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _scores_plan(data: int = 2):
    shapes = planning.ModelShapes.from_config(SMALL)
    work = planning.Workload(seq=SMALL.max_length, contraction="dense")
    return shapes, work, planning.Layout(data=data)


def test_a_plan_that_cannot_fit_is_refused_with_its_numbers():
    shapes, work, layout = _scores_plan()
    memory = planning.estimate("scores", shapes, work, layout, BATCH)
    device = memory.total // 2
    with pytest.raises(planning.PlanError) as error:
        planning.check_fits(memory, device)
    message = str(error.value)
    plan = dict(memory.parts)["query plan"]
    assert message.startswith(f"scores: needs {planning.format_bytes(memory.total)} per device")
    assert f"at batch {BATCH} ({BATCH // 2} per device)" in message
    assert f"query plan {planning.format_bytes(plan)}" in message
    assert f"device has {planning.format_bytes(device)}" in message
    assert "lower the rank" in message  # the largest part decides the advice
    planning.check_fits(memory, memory.total)  # fits exactly: no error
    planning.check_fits(memory, None)  # the backend does not say (CPU): nothing checked


def test_largest_batch_is_the_largest_that_fits():
    shapes, work, layout = _scores_plan()
    device, headroom = 150 * 2**20, 0.1

    def total(batch):
        return planning.estimate("scores", shapes, work, layout, batch).total

    batch = planning.largest_batch("scores", shapes, work, layout, device, headroom)
    assert batch % layout.data == 0
    assert total(batch) <= (1 - headroom) * device < total(batch + layout.data)
    assert planning.largest_batch("scores", shapes, work, layout, device, max_batch=4) == 4


def test_largest_batch_refuses_when_one_sequence_per_device_does_not_fit():
    shapes, work, layout = _scores_plan()
    with pytest.raises(planning.PlanError, match=r"scores: needs .* at batch 2 \(1 per device\)"):
        planning.largest_batch("scores", shapes, work, layout, 64 * 2**20)


def test_factors_stage_refuses_with_the_numbers_and_the_batch_that_fits(monkeypatch, mesh2):
    model = Decoder(SMALL, rngs=nnx.Rngs(0))
    layers = select_layers(model)
    plan, args = fit.FitPlan(batch_size=64), passes.FactorArgs(lambda_chunk=1)
    shapes = planning.ModelShapes.of(model, layers)
    work = planning.Workload(seq=SMALL.max_length)
    at_64 = planning.estimate("covariance", shapes, work, planning.Layout(data=2), 64).total
    monkeypatch.setattr(planning, "device_memory_bytes", lambda: at_64 // 2)
    with pytest.raises(planning.PlanError) as error:
        fit.report_memory("m", model, layers, plan, args, Placement(mesh2), SMALL.max_length)
    message = str(error.value)
    assert message.startswith(f"covariance: needs {planning.format_bytes(at_64)} per device")
    assert f"device has {planning.format_bytes(at_64 // 2)}" in message
    best = planning.largest_batch("covariance", shapes, work, planning.Layout(data=2), at_64 // 2)
    assert 2 <= best < 64 and message.endswith(
        f"config.factors.batch_size={best} fits with 10% headroom"
    )
    monkeypatch.setattr(planning, "device_memory_bytes", lambda: None)  # CPU: nothing checked
    fit.report_memory("m", model, layers, plan, args, Placement(mesh2), SMALL.max_length)


def test_scores_stage_refuses_a_plan_that_cannot_fit(monkeypatch):
    shapes, work, layout = _scores_plan()
    plan = {
        p: query_grads.DenseQueries(jnp.zeros((QUERIES, o, i), jnp.float32))
        for p, (o, i) in shapes.layers.items()
    }
    args = scoring_run.ScoresArgs(layers=(".*",), scoring=ScoreArgs(batch_size=BATCH))
    memory = planning.estimate("scores", shapes, work, layout, BATCH)
    monkeypatch.setattr(planning, "device_memory_bytes", lambda: memory.total // 2)
    with pytest.raises(planning.PlanError, match=r"^scores: needs .* query plan 100\.5 MiB"):
        scoring_run._check_memory("m", shapes, plan, args, SMALL.max_length, layout)
    monkeypatch.setattr(planning, "device_memory_bytes", lambda: memory.total)
    scoring_run._check_memory("m", shapes, plan, args, SMALL.max_length, layout)


def test_plan_memory_launcher_prints_the_two_paper_tables():
    root = Path(__file__).resolve().parent.parent
    script = root / "experiments" / "plan_memory.py"
    out = subprocess.run(
        [sys.executable, str(script), "--paper"], capture_output=True, text=True, check=True
    ).stdout
    assert "34.98B parameters (bfloat16)" in out and "120 tracked layers" in out  # Command R
    assert "TPU v5e-64" in out and "8×H100" in out
    assert out.count("| scores |") == 2 and out.count("| covariance |") == 2
