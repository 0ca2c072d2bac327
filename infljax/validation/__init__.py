"""Validation against retraining: batched retraining, metagradients, training-aware methods, LDS."""
