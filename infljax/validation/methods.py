"""Training-aware attribution: influence combined over training checkpoints or over seeds.

Every method here returns a score matrix [Q, N] with the convention of DESIGN §2 (positive:
the document raises the completion's log-probability), so the LDS compares it with EK-FAC and
the baselines unchanged.

* **Multi-checkpoint EK-FAC** (TracIn's checkpoint sum with EK-FAC at each checkpoint, in the
  spirit of SOURCE, Bae et al. 2024): influence functions describe the response of the model at
  one point of training; a document's effect on the final model accumulates along the whole
  run. Scores computed at C checkpoints `t_1 < ... < t_C` (factors fitted at each) are summed
  with the learning rate spent in each checkpoint's segment of training,
  `w_c = Σ_{t_{c-1} < t <= t_c} η_t / Σ_t η_t`, so one checkpoint at the last step is EK-FAC.
* **Seed ensembles** (TRAK's averaging over independently trained models): the mean of the
  scores of models trained on the same data from different seeds.
* **Exact metagradients** (`infljax.validation.metagradient`): the ground truth these
  approximate, for models small enough to differentiate through training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from infljax import training


def checkpoint_weights(args: training.TrainArgs, checkpoints: Sequence[int]) -> np.ndarray:
    """[C] the share of the run's learning rate spent up to each checkpoint since the previous
    one (steps 1-based: checkpoint t holds the parameters after t updates); sums to the share
    spent up to the last checkpoint (1 when it is the last step)."""
    steps = np.asarray(sorted(checkpoints))
    if not len(steps) or len(set(steps)) != len(steps) or steps[0] < 1 or steps[-1] > args.steps:
        raise ValueError(
            f"checkpoints must be distinct steps in [1, {args.steps}], got {list(checkpoints)}"
        )
    schedule = training.learning_rate(args)
    rates = np.asarray([float(schedule(t)) for t in range(args.steps)])  # update t+1 uses η_t
    spent = np.concatenate([[0.0], np.cumsum(rates)])
    total = spent[-1]
    if total <= 0:
        raise ValueError(f"the learning-rate schedule of {args} spends nothing")
    return np.diff(spent[np.concatenate([[0], steps])]) / total


def combine_checkpoints(scores: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Σ_c weights[c] · scores[c]: per-checkpoint score matrices [Q, N] -> one [Q, N]."""
    if len(scores) != len(weights) or not len(scores):
        raise ValueError(f"{len(scores)} score matrices for {len(weights)} checkpoint weights")
    return np.tensordot(np.asarray(weights, np.float64), np.stack(scores).astype(np.float64), 1)


def ensemble(scores: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of score matrices [Q, N] of models trained from different seeds."""
    if not len(scores):
        raise ValueError("an ensemble needs at least one model's scores")
    return np.mean(np.stack(scores).astype(np.float64), axis=0)
