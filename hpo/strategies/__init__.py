"""Tuning strategies: small implementations of one interface over one trainer."""

from hpo.strategies.base import Strategy, get_strategy, strategy_names  # noqa: F401
from hpo.strategies import fixed, guided, optuna_search, pbt  # noqa: F401  (each registers itself)
