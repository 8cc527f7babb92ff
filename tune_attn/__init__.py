"""tune-attn: hyperparameter search for attention image classifiers on Ray Tune."""

__version__ = "0.1.0"
