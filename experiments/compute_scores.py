"""Score every query against every corpus document for each model (the `scores` stage alone).

python experiments/compute_scores.py --config=configs/demo.py --workdir=runs/demo
python experiments/compute_scores.py --config=configs/demo.py --workdir=runs/demo \
    --config.scores.rank=64 --config.scores.strategy=kfac --config.overwrite=True

Needs the corpus, the models, their factors (unless strategy='identity') and queries.jsonl in
the workdir. Writes ``scores/<model>/`` (DESIGN §4); an interrupted run resumes.
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
    run_stages(_CONFIG.value, _WORKDIR.value, only=["scores"])


if __name__ == "__main__":
    app.run(main)
