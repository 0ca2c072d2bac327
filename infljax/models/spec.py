"""``config.models.<name>``: one model of a study, trained here or converted from a checkpoint."""

from __future__ import annotations

import dataclasses

from ml_collections import ConfigDict

from infljax.config import read
from infljax.models.convert import ConvertArgs
from infljax.training import TrainArgs


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model of the config (the pretrain stage makes ``models/<name>/`` from it).

    Attributes:
      checkpoint: a local Hugging Face checkpoint directory, converted as `convert` says;
        "" = a decoder trained here on the corpus: `model` (`infljax.models.decoder.
        DecoderConfig` fields but the vocabulary size and context, which the corpus sets)
        trained with `train`.
      checkpoints: multi-checkpoint EK-FAC for this model ({model: weight}, each a model of
        the config: one checkpoint of the same family; the baselines stage sums their scores).
    """

    checkpoint: str = ""
    convert: ConvertArgs = ConvertArgs()
    model: dict = dataclasses.field(default_factory=dict)
    train: TrainArgs = TrainArgs()
    checkpoints: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def trained(self) -> bool:
        """Whether the pretrain stage trains it (no checkpoint to convert)."""
        return not self.checkpoint


def model_specs(config: ConfigDict) -> dict[str, ModelSpec]:
    """Every ``config.models.<name>``, typed (in the config's order)."""
    return {name: read(ModelSpec, s, f"models.{name}") for name, s in config.models.items()}
