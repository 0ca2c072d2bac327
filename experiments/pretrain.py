"""Pretrain the config's models on an existing tokenised corpus (the `pretrain` stage alone).

python experiments/pretrain.py --config=configs/demo.py --workdir=runs/demo
"""

from absl import app, flags
from ml_collections import config_flags

from infljax.pipeline import run_stages
from infljax.platform import exit_on_user_error, setup

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Experiment config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


def main(argv):
    del argv
    setup()
    with exit_on_user_error():
        run_stages(_CONFIG.value, _WORKDIR.value, only=["pretrain"])


if __name__ == "__main__":
    app.run(main)
