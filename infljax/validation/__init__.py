"""Validation against ground truth: the linear datamodeling score and counterfactual retraining."""
