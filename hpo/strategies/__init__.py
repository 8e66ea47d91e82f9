"""Tuning strategies (fixed, guided, optuna, pbt): small implementations of one interface over an
engine's `flow.backend.Backend`. Imports core, data, method and flow; never an engine."""

from hpo.strategies import fixed, guided, optuna_search, pbt  # noqa: F401  (each registers itself)
from hpo.strategies.base import Strategy, get_strategy, strategy_names  # noqa: F401
