"""Analyse the score matrices and write the report (the `analysis` and `report` stages alone).

    python experiments/analyze.py --config=configs/demo.py --workdir=runs/demo
    python experiments/analyze.py --config=configs/demo.py --workdir=runs/demo \
        --config.analysis.normalise=False --config.overwrite=True   (rank by raw scores)

Reads scores/<model>/, queries.jsonl and corpus/ under --workdir; writes analysis/summary.json,
analysis/*.png and report/index.html, and prints the report's path.
"""

from absl import app, flags
from ml_collections import config_flags

from infljax.pipeline import run_stages
from infljax.platform import setup
from infljax.workdir import report_dir

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Experiment config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


def main(argv):
    del argv
    setup()
    run_stages(_CONFIG.value, _WORKDIR.value, only=["analysis", "report"])
    print(f"report: {(report_dir(_WORKDIR.value) / 'index.html').absolute()}")


if __name__ == "__main__":
    app.run(main)
