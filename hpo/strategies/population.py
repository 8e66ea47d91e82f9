"""PBT's exploit and explore (Jaderberg et al. 2017, as Ray Tune's PopulationBasedTraining
does them), as pure functions of a population's scores and a seeded generator.

A search space is OptunaSearch's: name -> {'low', 'high', 'log'} or {'choices': [...]}.
"""

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

Space = Mapping[str, Mapping]


def sample(space: Space, rng: np.random.Generator) -> Dict[str, float]:
    """Values drawn from the space: uniform, or log-uniform where `log`; a choice uniformly."""
    return {name: _draw(spec, rng) for name, spec in space.items()}


def _draw(spec: Mapping, rng: np.random.Generator):
    if "choices" in spec:
        return list(spec["choices"])[int(rng.integers(len(spec["choices"])))]
    low, high = float(spec["low"]), float(spec["high"])
    if spec.get("log"):
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return float(rng.uniform(low, high))


def explore(values: Mapping[str, float], space: Space, rng: np.random.Generator,
            factors: Sequence[float], resample_probability: float) -> Dict[str, float]:
    """Each value resampled from the space with `resample_probability`, else multiplied by a
    factor drawn from `factors` and clipped to the space (so the values stay in the space
    Optuna searches); a choice moves to its neighbour (down for a factor < 1, up for > 1)."""
    out = dict(values)
    for name, spec in space.items():
        if rng.random() < resample_probability:
            out[name] = _draw(spec, rng)
            continue
        factor = float(factors[int(rng.integers(len(factors)))])
        if "choices" in spec:
            choices = list(spec["choices"])
            i = choices.index(values[name]) if values[name] in choices else 0
            out[name] = choices[min(max(i + (1 if factor > 1 else -1), 0), len(choices) - 1)]
        else:
            out[name] = float(min(max(values[name] * factor, float(spec["low"])), float(spec["high"])))
    return out


def quantile_size(population: int, quantile: float) -> int:
    """Members in the top (and the bottom) quantile: at least one, at most half (as Ray Tune)."""
    return max(1, min(math.ceil(population * quantile), population // 2))


def rank(scores: Sequence[Optional[float]], maximize: bool) -> List[int]:
    """Member indices best first; a missing or non-finite score (a diverged member) last, ties by index."""
    def key(i):
        score = scores[i]
        if score is None or not math.isfinite(score):
            return (1, 0.0, i)
        return (0, -score if maximize else score, i)
    return sorted(range(len(scores)), key=key)


def exploits(scores: Sequence[Optional[float]], maximize: bool, quantile: float,
             rng: np.random.Generator) -> List[Tuple[int, int]]:
    """(target, source) pairs: each member of the bottom quantile copies one drawn from the top."""
    order = rank(scores, maximize)
    n = quantile_size(len(scores), quantile)
    top, bottom = order[:n], order[-n:]
    return [(target, top[int(rng.integers(n))]) for target in sorted(bottom)]
