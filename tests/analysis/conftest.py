"""A synthetic workdir analysed once per test session (the two stages take ~10 s)."""

import importlib.util
from pathlib import Path

import pytest

from infljax.pipeline import run_stages
from tests.analysis.synthetic import synthetic_study, write_baselines, write_workdir

ROOT = Path(__file__).resolve().parents[2]


def demo_config(variant: str = "smoke"):
    spec = importlib.util.spec_from_file_location("demo_config", ROOT / "configs" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


@pytest.fixture(scope="session")
def study():
    return synthetic_study(seed=0)


@pytest.fixture(scope="session")
def analysed_workdir(tmp_path_factory, study):
    """The synthetic study's workdir, with baselines, after the `analysis` and `report` stages."""
    workdir = write_baselines(study, write_workdir(study, tmp_path_factory.mktemp("study")))
    run_stages(demo_config(), workdir, only=["analysis", "report"])
    return workdir
