"""AnalysisArgs validation and the config section that builds it."""

import pytest
from ml_collections import ConfigDict

from infljax.analysis.study import AnalysisArgs
from infljax.stages.analysis import stage_args
from tests.analysis.conftest import demo_config


@pytest.mark.parametrize(
    "field,value",
    [("answer_k", 0), ("normalise", 1), ("source_ks", (10, 0)), ("dependency_percents", (0.0,)),
     ("top_documents", -1), ("power_law_k", 2.5)],
)  # fmt: skip
def test_bad_arguments_are_refused_with_the_field_name(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        AnalysisArgs(**{field: value})


@pytest.mark.parametrize("variant", ["", "smoke"])
def test_demo_config_section_builds_valid_arguments(variant):
    config = demo_config(variant)
    args, _ = stage_args(config)
    assert args.normalise and args.source_ks == tuple(config.analysis.source_ks)
    assert stage_args(ConfigDict())[0] == AnalysisArgs()


def test_unknown_config_fields_are_refused():
    with pytest.raises(ValueError, match="unknown fields \\['answr_k'\\]"):
        stage_args(ConfigDict({"analysis": {"answr_k": 5, "models": ()}}))
