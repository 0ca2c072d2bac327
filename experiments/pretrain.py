"""Pretrain the config's models on an existing tokenised corpus (the `pretrain` stage alone).

python experiments/pretrain.py --config=configs/demo.py --workdir=runs/demo
"""

from infljax.platform import launch

if __name__ == "__main__":
    launch(["pretrain"])
