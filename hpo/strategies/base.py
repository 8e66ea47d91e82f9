"""The strategy interface: given an experiment and a seed, produce a result record."""

import abc
from typing import Dict, List

from hpo.core.errors import UserError

_REGISTRY = {}


class Strategy(abc.ABC):
    """How hyper-parameters are chosen for a run; training itself is the experiment's."""

    name: str = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            _REGISTRY[cls.name] = cls

    @abc.abstractmethod
    def run(self, experiment, seed: int) -> Dict:
        """Runs (or resumes) the strategy and returns its result record."""


def strategy_names() -> List[str]:
    return list(_REGISTRY)


def get_strategy(name: str) -> Strategy:
    """A strategy instance, configured by gin (strategy classes are gin configurables)."""
    if name not in _REGISTRY:
        raise UserError(f"unknown strategy '{name}' (choose from {', '.join(_REGISTRY)})")
    return _REGISTRY[name]()
