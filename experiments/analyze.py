"""Analyse the score matrices and write the report (the `analysis` and `report` stages alone).

    python experiments/analyze.py --config=configs/demo.py --workdir=runs/demo
    python experiments/analyze.py --config=configs/demo.py --workdir=runs/demo \
        --config.analysis.normalise=False --config.overwrite=True   (rank by raw scores)

Reads scores/<model>/, queries.jsonl and corpus/ under --workdir; writes analysis/summary.json,
analysis/*.png and report/index.html, and prints the report's path.
"""

from infljax.platform import launch

if __name__ == "__main__":
    launch(["analysis", "report"])
