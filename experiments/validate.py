"""Validate the scores against retraining: the LDS of every method, with its ceiling.

    python experiments/validate.py --workdir=runs/validate
    python experiments/validate.py --config=configs/validate.py:smoke --workdir=/tmp/v

Runs every stage of configs/validate.py (the demo's world, corpus, small model, factors, scores
and baselines, then `validate`, analysis and report); finished stages and retrainings are
skipped. Start the same command in a second terminal to share the retrainings between two
processes.
"""

from infljax.platform import launch

if __name__ == "__main__":
    launch(default_config="configs/validate.py")
