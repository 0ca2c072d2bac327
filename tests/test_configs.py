"""Every config in configs/ builds (with each of its variants) and rejects mistyped fields."""

import importlib.util
from pathlib import Path

import pytest

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.py"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variants(path: Path) -> list[str]:
    return list(getattr(load(path), "VARIANTS", ("",)))


@pytest.mark.parametrize(
    "path,variant", [(p, v) for p in CONFIGS for v in variants(p)], ids=lambda x: str(x)
)
def test_config_builds_and_is_locked(path, variant):
    config = load(path).get_config(variant)
    assert config.is_locked
    with pytest.raises(AttributeError):
        config.mdoels = {}  # a typo must not silently create a field
    assert config.stages, "a config must enable at least one stage"


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(ValueError, match="smoke"):
        load(CONFIGS[0].parent / "demo.py").get_config("smokey")
