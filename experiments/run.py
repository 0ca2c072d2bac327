"""Run the whole pipeline (every stage the config enables) into one workdir.

    python experiments/run.py --config=configs/demo.py --workdir=runs/demo
    python experiments/run.py --config=configs/demo.py:smoke --workdir=/tmp/smoke
    python experiments/run.py --config=configs/demo.py --workdir=runs/demo --stages=corpus,pretrain

Stages skip themselves when their outputs exist with the same arguments, refuse when the
arguments differ (unless --config.overwrite=True) and resume when they were interrupted.
"""

from infljax.platform import launch

if __name__ == "__main__":
    launch()
