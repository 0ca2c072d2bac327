"""Run the whole pipeline (every stage the config enables) into one workdir.

    python experiments/run.py --config=configs/demo.py --workdir=runs/demo
    python experiments/run.py --config=configs/demo.py:smoke --workdir=/tmp/smoke
    python experiments/run.py --config=configs/demo.py --workdir=runs/demo --stages=corpus,pretrain

Stages skip themselves when their outputs exist with the same arguments, refuse when the
arguments differ (unless --config.overwrite=True) and resume when they were interrupted.
"""

from absl import app, flags
from ml_collections import config_flags

from infljax.pipeline import run_stages
from infljax.platform import exit_on_user_error, setup

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Experiment config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)
_STAGES = flags.DEFINE_list("stages", None, "Run only these stages (default: config.stages).")


def main(argv):
    del argv
    setup()
    with exit_on_user_error():
        run_stages(_CONFIG.value, _WORKDIR.value, only=_STAGES.value)


if __name__ == "__main__":
    app.run(main)
