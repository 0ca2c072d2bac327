"""Fit EK-FAC factors for the config's trained models (the `factors` stage alone).

python experiments/fit_factors.py --config=configs/demo.py --workdir=runs/demo

Writes <workdir>/factors/<model>/; an interrupted fit resumes from its last data partition.
"""

from absl import app, flags
from ml_collections import config_flags

from infljax.pipeline import run_stages
from infljax.platform import setup

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Experiment config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


def main(argv):
    del argv
    setup()
    run_stages(_CONFIG.value, _WORKDIR.value, only=["factors"])


if __name__ == "__main__":
    app.run(main)
