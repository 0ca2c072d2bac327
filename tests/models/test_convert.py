"""Hugging Face checkpoints -> the infljax decoder: parity per architecture, generation, errors.

Golden parity reads the committed fixtures of tests/fixtures/hf (written by make_fixtures.py with
transformers' PyTorch classes), so it needs no torch; the live tests re-run transformers when
torch is importable. Tolerance: float32 logits of magnitude ~1-5 from 2-layer d16 models agree
to ~1e-5 (summation order); 1e-4 absolute is the bound the issue states, and never loosened.
"""

import functools
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from infljax.checkpoints import StageConflict
from infljax.distributed import MeshArgs, make_mesh
from infljax.models.convert import (
    CheckpointError,
    ConvertArgs,
    convert_checkpoint,
    load_hf,
)
from infljax.models.generate import GenerateArgs, greedy_generate
from infljax.models.io import load_model

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hf"
NAMES = sorted(p.name for p in FIXTURES.iterdir() if (p / "expected.npz").is_file())
ATOL = 1e-4  # float32


def expected(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / name / "expected.npz"))


@functools.cache
def loaded(name: str):
    """The float32 conversion of a fixture (shared by the tests that only read it)."""
    return load_hf(FIXTURES / name)


@functools.cache
def forward(graphdef):
    return jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens))


def logits(model, tokens) -> np.ndarray:
    graphdef, state = nnx.split(model)
    return np.asarray(forward(graphdef)(state, tokens))


def max_diff(model, name: str) -> float:
    exp = expected(name)
    return float(np.max(np.abs(logits(model, exp["input_ids"]) - exp["logits"])))


def test_every_architecture_has_a_fixture():
    types = {json.loads((FIXTURES / n / "config.json").read_text())["model_type"] for n in NAMES}
    assert types == {"gpt2", "llama", "gpt_neox", "cohere"}


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_transformers(name):
    model = loaded(name)
    assert model.embed[...].dtype == np.float32
    assert max_diff(model, name) <= ATOL


@pytest.mark.parametrize("name", ["gpt_neox", "cohere"])
def test_greedy_generation_matches_transformers(name):
    exp = expected(name)
    model = loaded(name)
    args = GenerateArgs(max_new_tokens=len(exp["generated"]), batch_size=1)
    out = greedy_generate(model, [exp["prompt"].tolist()], eos_id=-1, pad_id=0, args=args)
    assert out == [exp["generated"].tolist()]


def test_variants_are_what_the_checkpoints_say():
    neox, cohere = loaded("gpt_neox").cfg, loaded("cohere").cfg
    assert (neox.residual, neox.rotary, neox.head_dim, neox.tie_embeddings) == (
        "parallel",
        4,
        8,
        False,
    )
    assert (cohere.residual, cohere.rope_layout, cohere.qk_norm, cohere.kv_heads) == (
        "parallel_shared_norm",
        "interleaved",
        True,
        2,
    )
    assert cohere.logit_scale == 0.25 and cohere.norm == "layernorm" and not cohere.bias("norm")
    llama3 = loaded("llama3_rope").cfg
    assert llama3.head_dim == 12 and llama3.rope_scaling.kind == "llama3"


def test_bfloat16_conversion_keeps_the_logits_close():
    model = load_hf(FIXTURES / "gpt_neox_sequential_bf16", ConvertArgs(dtype="bfloat16"))
    assert model.embed[...].dtype == jax.numpy.bfloat16
    # the stored weights are bf16 already; activations in bf16 carry ~2^-8 relative error per op
    assert max_diff(model, "gpt_neox_sequential_bf16") < 0.15


def test_fsdp_sharding_over_the_data_axis_keeps_the_logits():
    mesh = make_mesh(MeshArgs(data=4, model=2))
    model = load_hf(FIXTURES / "llama_gqa_linear", ConvertArgs(shard="fsdp"), mesh)
    kernel = model.blocks[0].mlp.up_proj.kernel[...]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "data")
    assert len(kernel.addressable_shards[0].data.flatten()) == kernel.size // 4
    assert max_diff(model, "llama_gqa_linear") <= ATOL


def test_bare_names_and_legacy_buffers_load(tmp_path):
    """The original gpt2 files name tensors without ``transformer.`` and store causal masks."""
    src = tmp_path / "gpt2"
    shutil.copytree(FIXTURES / "gpt2", src)
    tensors = load_file(src / "model.safetensors")
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    tensors["h.0.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), np.float32))
    save_file(tensors, src / "model.safetensors")
    assert max_diff(load_hf(src), "gpt2") <= ATOL


def test_max_length_cuts_learned_positions_and_is_bounded():
    model = load_hf(FIXTURES / "gpt2", ConvertArgs(max_length=16))
    assert model.cfg.max_length == 16
    np.testing.assert_array_equal(model.pos_embed[...], loaded("gpt2").pos_embed[...][:16])
    with pytest.raises(CheckpointError, match="max_position_embeddings=32"):
        load_hf(FIXTURES / "gpt2", ConvertArgs(max_length=33))


def test_converted_directory_loads_with_load_model_and_skips_or_refuses(tmp_path):
    out = tmp_path / "models" / "cohere"
    assert convert_checkpoint(FIXTURES / "cohere", out)
    model = load_model(out)
    assert model.cfg == loaded("cohere").cfg  # nested RopeScaling round-trips
    assert max_diff(model, "cohere") <= ATOL
    assert json.loads((out / "metrics.json").read_text())["num_params"] > 0
    assert not convert_checkpoint(FIXTURES / "cohere", out)  # up to date: skipped
    with pytest.raises(StageConflict, match="convert.dtype"):
        convert_checkpoint(FIXTURES / "cohere", out, ConvertArgs(dtype="bfloat16"))


# ---------------------------------------------------------------------------------------------
# errors a user can act on


def copy_fixture(tmp_path: Path, name: str = "llama_gqa_linear") -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def test_directory_without_config_or_weights(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_hf(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_hf(tmp_path)
    src = copy_fixture(tmp_path)
    (src / "model.safetensors").rename(src / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"no weights in .*pytorch_model\.bin"):
        load_hf(src)


def test_unsupported_model_type_lists_the_supported(tmp_path):
    src = copy_fixture(tmp_path)
    config = json.loads((src / "config.json").read_text()) | {"model_type": "mamba"}
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"'mamba'.*\['cohere', 'gpt2', 'gpt_neox', 'llama'\]"
    ):
        load_hf(src)


def test_missing_and_unexpected_tensors_are_listed(tmp_path):
    src = copy_fixture(tmp_path)
    tensors = load_file(src / "model.safetensors")
    tensors["model.layers.0.mlp.extra.weight"] = tensors.pop("model.layers.1.mlp.up_proj.weight")
    save_file(tensors, src / "model.safetensors")
    with pytest.raises(CheckpointError) as error:
        load_hf(src)
    message = str(error.value)
    assert "missing tensors (1): model.layers.1.mlp.up_proj.weight" in message
    assert "unexpected tensors (1): model.layers.0.mlp.extra.weight" in message


def test_shapes_that_disagree_with_the_config_are_named(tmp_path):
    src = copy_fixture(tmp_path)
    config = json.loads((src / "config.json").read_text()) | {"intermediate_size": 48}
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"blocks\.0\.mlp\.down_proj\.kernel shape"):
        load_hf(src)


def test_dtypes_that_cannot_hold_the_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="float16.*valid"):
        ConvertArgs(dtype="float16")
    with pytest.raises(CheckpointError, match="int8"):
        ConvertArgs(dtype="int8")
    src = copy_fixture(tmp_path)
    tensors = load_file(src / "model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight"
    tensors[name] = (tensors[name] * 100).astype(np.int8)
    save_file(tensors, src / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"{name}.*I8.*quantised"):
        load_hf(src)


def test_values_beyond_the_target_dtype_are_refused(tmp_path):
    src = copy_fixture(tmp_path)
    tensors = load_file(src / "model.safetensors")
    name = "model.norm.weight"
    tensors[name] = tensors[name].astype(np.float64) * 1e300
    save_file(tensors, src / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"{name}.*overflows float32"):
        load_hf(src)


def test_sharded_index_naming_a_missing_file(tmp_path):
    src = copy_fixture(tmp_path, "cohere")
    (src / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002"):
        load_hf(src)


# ---------------------------------------------------------------------------------------------
# live comparison against transformers (CPU torch)


def test_live_parity_with_transformers():
    """Fresh inputs, and the committed fixtures are what this transformers version computes."""
    torch = pytest.importorskip("torch")
    import transformers

    for name in NAMES:
        reference = transformers.AutoModelForCausalLM.from_pretrained(
            FIXTURES / name, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        model = loaded(name)
        exp = expected(name)
        tokens = np.random.default_rng(7).integers(0, 64, size=exp["input_ids"].shape)
        with torch.no_grad():
            ref = reference(torch.tensor(tokens)).logits.numpy()
            fixture = reference(torch.tensor(exp["input_ids"])).logits.numpy()
        np.testing.assert_allclose(logits(model, tokens), ref, rtol=0, atol=ATOL, err_msg=name)
        np.testing.assert_allclose(fixture, exp["logits"], rtol=0, atol=1e-5, err_msg=name)


def test_live_parity_dynamic_rope_and_untied_gpt2(tmp_path):
    torch = pytest.importorskip("torch")
    import transformers

    configs = {
        "dynamic": transformers.LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=24,
            rope_parameters={"rope_type": "dynamic", "factor": 4.0, "rope_theta": 100.0},
        ),
        "gpt2_untied": transformers.GPT2Config(
            vocab_size=64, n_positions=24, n_embd=16, n_layer=2, n_head=4, tie_word_embeddings=False
        ),
    }
    for name, config in configs.items():
        torch.manual_seed(0)
        reference = transformers.AutoModelForCausalLM.from_config(config).eval()
        with torch.no_grad():
            for p in reference.parameters():
                p.add_(0.3 * torch.randn(p.shape))
        reference.save_pretrained(tmp_path / name)
        tokens = np.random.default_rng(0).integers(0, 64, size=(2, 24))
        with torch.no_grad():
            ref = reference(torch.tensor(tokens)).logits.numpy()
        model = load_hf(tmp_path / name)
        np.testing.assert_allclose(logits(model, tokens), ref, rtol=0, atol=ATOL, err_msg=name)


def test_parameters_are_placed_not_left_abstract():
    model = loaded("gpt2")
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert all(isinstance(x, jax.Array) for x in leaves)
