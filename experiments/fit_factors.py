"""Fit EK-FAC factors for the config's trained models (the `factors` stage alone).

python experiments/fit_factors.py --config=configs/demo.py --workdir=runs/demo

Writes <workdir>/factors/<model>/; an interrupted fit resumes from its last data partition.
"""

from infljax.platform import launch

if __name__ == "__main__":
    launch(["factors"])
