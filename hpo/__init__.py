"""Compare hyper-parameter tuning strategies on sequence-to-sequence models."""

__version__ = "0.1.0"
