"""Compare hyper-parameter tuning strategies on sequence-to-sequence models.

The stages a run's data flows through, each importing only those below it (pyproject.toml's
import-linter contracts): cli (gin, the commands) > report > run > strategies > t5x_backend >
engine > flow > method > data > scoring > core.
"""

__version__ = "0.1.0"
