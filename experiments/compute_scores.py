"""Score every query against every corpus document for each model (the `scores` stage alone).

python experiments/compute_scores.py --config=configs/demo.py --workdir=runs/demo
python experiments/compute_scores.py --config=configs/demo.py --workdir=runs/demo \
    --config.scores.query_grads.rank=64 --config.scores.strategy=kfac --config.overwrite=True

Needs the corpus, the models, their factors (unless strategy='identity') and queries.jsonl in
the workdir. Writes ``scores/<model>/`` (DESIGN §4); an interrupted run resumes.
"""

from infljax.platform import launch

if __name__ == "__main__":
    launch(["scores"])
