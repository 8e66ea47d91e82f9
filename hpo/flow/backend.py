"""What an engine is to the strategies (`Backend`), and what every run does around its
training, written once for both engines (`train_and_record`, `population_record`).

An engine (`hpo.engine.experiment.Experiment`, `hpo.t5x_backend.experiment.T5xExperiment`) turns a
strategy's request into training and hands the flow a `Trained`; the flow skips finished runs,
fails diverged Optuna trials, scores, and builds and adds the record.
"""

import math
import os
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Protocol, Sequence, Tuple

import jax

from hpo.core import distributed, io as hpo_io
from hpo.core.errors import Diverged
from hpo.flow import records


class Trained(NamedTuple):
    """One run's training as its engine ended it."""
    history: Sequence[Dict]  # dev evaluations, {"step", "loss", ...}
    wall_seconds: float  # its training's (a GLUE fine-tuning's is added to the record's)
    diverged: Optional[Dict]  # {"step", "reason"} in the engine's own step count; None if finite
    diverged_after: Optional[int]  # the run's steps when it diverged (its compute)
    num_params: int
    tuner: Any  # the tuner's final state (host-local), or None
    score: Callable[[], Dict]  # dev and test scores of the trained model (decoding, or GLUE fine-tuning)
    fields: Mapping[str, Any] = {}  # the engine's own record fields (T5X: partitioner and mesh)


class Evaluation(Protocol):
    """How a finished run is scored, on either engine (`hpo.engine.evaluate.Translation`,
    `hpo.engine.glue_finetune.GlueFinetuning`): through the engine's `decode_split`,
    `decoding` and `finetune`, so one evaluation serves both."""
    benchmark: str  # "bleu", "glue"
    splits: Sequence[str]  # the task's splits it reads
    objectives: Sequence[str]  # record fields Optuna and PBT may select on
    result_keys: Sequence[str]  # record fields an Optuna trial keeps

    def score(self, engine: "Backend", fit: Any, run_dir: str, seed: int) -> Dict: ...


class Backend(Protocol):
    """What strategies and evaluations use of an engine (the built-in one, T5X)."""
    backend: str  # the records' engine name: "builtin", "t5x"
    model_dir: str
    task: str
    train_steps: int
    batch_size: int
    evaluation: Evaluation

    def run_dir(self, strategy: str, seed: int, *parts: str) -> str: ...

    def base_hparams(self) -> Dict[str, float]: ...

    def check_settable(self, name: str, who: str) -> None: ...

    def param_shapes(self) -> Any: ...

    # One run, recorded (`train_and_record`'s keywords: run_dir, on_eval, record_extra, step_cost, write_record).
    def train_fixed(self, strategy: str, seed: int, values_at: Callable, groups=None, **run) -> Dict: ...

    def train_guided(self, strategy: str, seed: int, tuning, **run) -> Dict: ...

    # A population's members, segment by segment (PBT).
    def member_program(self, names: Sequence[str], groups: Mapping[str, str] = None) -> Any: ...

    def train_member(self, program, run_dir: str, seed: int, values: Mapping[str, float], until: int) -> Any: ...

    def copy_member(self, program, source_dir: str, target_dir: str, seed: int, step: int,
                    values: Mapping[str, float]) -> None: ...

    def member_record(self, strategy: str, seed: int, run_dir: str, fit, member_dir: str, member_seed: int,
                      wall_seconds: float, compute_steps: float) -> Dict: ...

    # A finished run (`fit`: the engine's end of training), for its evaluation.
    def decode_split(self, fit, split: str) -> Tuple[List[str], List[str]]: ...  # (hypotheses, references)

    def decoding(self) -> Dict: ...  # how it decodes, for the records

    def finetune(self, fit, glue, run_dir: str, seed: int) -> Tuple[Callable, float]: ...  # (predict, seconds)


def num_params(params) -> int:
    """The number of scalars in a parameter tree (arrays or shapes)."""
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(params)))


def train_and_record(engine: Backend, strategy: str, seed: int, train: Callable[[str], Trained], *,
                     run_dir: str = None, record_extra: Callable[[Any], Dict] = None, step_cost: float = 1.0,
                     write_record: bool = True) -> Dict:
    """Trains (or resumes) one run with `train(run_dir)`, scores dev and test, and records it;
    a finished run's record is returned as it is. `step_cost`: a step's compute in plain train
    steps (a guided step counts its guide pass); `record_extra(tuner)`: the strategy's fields;
    `write_record=False`: an Optuna trial (its study records), which fails if it diverged."""
    run_dir = run_dir or engine.run_dir(strategy, seed)
    with hpo_io.training(run_dir, leader=distributed.is_leader()):
        rel = os.path.relpath(run_dir, engine.model_dir)
        done = records.finished(engine, strategy, seed, rel)
        if done is not None:
            return done
        trained = train(run_dir)
        if trained.diverged and not write_record:
            raise Diverged(**trained.diverged)
        record = _record(engine, strategy, seed, rel, trained, step_cost)
        if trained.diverged:  # it stopped there
            record["compute_steps"] = trained.diverged_after * step_cost
        record.update(record_extra(trained.tuner) if record_extra else {})
        if write_record:
            records.add(engine.model_dir, record)
        return record


def population_record(engine: Backend, strategy: str, seed: int, run_dir: str, best: Trained,
                      wall_seconds: float, compute_steps: float) -> Dict:
    """The record of a population whose best member is `best`: that member scored on dev and
    test, the population's compute and wall time."""
    record = _record(engine, strategy, seed, os.path.relpath(run_dir, engine.model_dir),
                     best._replace(wall_seconds=wall_seconds), 1.0)
    record["compute_steps"] = float(compute_steps)
    return record


def _record(engine: Backend, strategy: str, seed: int, rel: str, trained: Trained, step_cost: float) -> Dict:
    # A diverged run is a result too (a row marked diverged), not a score of its NaN model.
    scores = records.diverged_scores(engine, trained.diverged) if trained.diverged else trained.score()
    finetuning = (scores.get("finetune") or {}).get("wall_seconds", 0.0)  # GLUE: the fine-tuning run's time too
    record = records.run_record(engine, strategy, seed, rel, history=trained.history,
                                wall_seconds=trained.wall_seconds + finetuning, step_cost=step_cost,
                                num_params=trained.num_params, scores=scores)
    record.update(trained.fields)
    return record
