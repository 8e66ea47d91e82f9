"""The PBT strategy: Population Based Training (Jaderberg et al. 2017), the other online
schedule learner beside the guided strategy.

A population of members trains with values drawn from OptunaSearch's search space.
Every `interval` steps the members are ranked on dev; each member of the bottom
quantile copies the checkpoint of one drawn from the top (exploit) and perturbs or
resamples its values (explore). The row is the best member at the end; its compute
is the whole population's, and its lineage's values step by step are its learned
schedule (hparams.csv, replayable with the fixed strategy as guided's is).

The population's state (each member's values, steps, scores and lineage, the
exploits) is a JSON file in the run directory, rewritten atomically after each
member's segment and each round's exploits; with the members' checkpoints it lets a
rerun after kill -9 continue where the population stopped, and exploit and explore
draw from a generator seeded by (seed, round), so a resumed run decides as the
uninterrupted one would.
"""

import json
import math
import os
import time
from typing import Dict, List, Sequence

import gin
import numpy as np

from hpo import distributed, faults, io as hpo_io, preemption, records
from hpo.errors import UserError, positive_int
from hpo.strategies import population
from hpo.strategies.base import Strategy
from hpo.strategies.guided import SCHEDULE_FILE, summarise, write_schedule

STATE_FILE = "population.json"
DEFAULT_ROUNDS = 8  # interval None: TRAIN_STEPS / 8


@gin.configurable
class Pbt(Strategy):
    """`population` members; every `interval` steps (None: TRAIN_STEPS / 8) the bottom
    `quantile` copy a top member and explore: each value is resampled from the search space
    with `resample_probability`, else multiplied by a factor drawn from `factors`. Ranked by
    `metric` ('dev_loss', or 'dev_bleu' on the part of dev that intermediate evaluations
    decode). `search_space` None: OptunaSearch's (so the two search the same space)."""

    name = "pbt"

    def __init__(self, population: int = 4, interval: int = None, quantile: float = 0.25,
                 resample_probability: float = 0.25, factors: Sequence[float] = (0.8, 1.25),
                 metric: str = "dev_loss", search_space=None):
        if not isinstance(population, int) or population < 2:
            raise UserError(f"pbt: Pbt.population must be an integer >= 2, got {population!r}")
        if interval is not None:
            positive_int(interval, "Pbt.interval")
        if not 0 < quantile <= 0.5:
            raise UserError(f"pbt: Pbt.quantile must be in (0, 0.5], got {quantile!r}")
        if not 0 <= resample_probability <= 1:
            raise UserError(f"pbt: Pbt.resample_probability must be in [0, 1], got {resample_probability!r}")
        factors = [factors] if isinstance(factors, (int, float)) else list(factors)
        if not factors or not all(isinstance(f, (int, float)) and f > 0 for f in factors):
            raise UserError(f"pbt: Pbt.factors must be positive numbers, got {factors!r}")
        if metric not in ("dev_loss", "dev_bleu"):
            raise UserError("pbt: Pbt.metric must be 'dev_loss' or 'dev_bleu'")
        self.population, self.interval, self.quantile = population, interval, quantile
        self.resample_probability, self.factors, self.metric = resample_probability, factors, metric
        self.search_space = search_space

    @property
    def space(self) -> Dict[str, Dict]:
        from hpo.strategies.optuna_search import OptunaSearch  # its validation and default
        # None must not reach OptunaSearch as an argument: it would override a gin binding of its space.
        return (OptunaSearch() if self.search_space is None else OptunaSearch(search_space=self.search_space)).space

    def settings(self, experiment) -> Dict:
        """What a population's state must have been made with (as JSON reads it back)."""
        return json.loads(json.dumps({"population": self.population, "interval": self.every(experiment), "quantile": self.quantile,
                "resample_probability": self.resample_probability, "factors": self.factors,
                "metric": self.metric, "search_space": self.space, "train_steps": experiment.train_steps}))

    def every(self, experiment) -> int:
        return self.interval or max(1, experiment.train_steps // DEFAULT_ROUNDS)

    def run(self, experiment, seed: int) -> Dict:
        if self.metric == "dev_bleu" and experiment.backend != "builtin":
            raise UserError(f"pbt: Pbt.metric = 'dev_bleu' ranks on the built-in engine's intermediate decoding; "
                            f"on --backend={experiment.backend} use 'dev_loss'")
        if self.metric not in experiment.evaluation.objectives:
            raise UserError(f"pbt: metric '{self.metric}' is not measured by this experiment "
                            f"(choose from {', '.join(experiment.evaluation.objectives)})")
        for name in self.space:
            experiment.check_settable(name, "pbt")
        run_dir = experiment.run_dir(self.name, seed)
        with hpo_io.training(run_dir, leader=distributed.is_leader()):
            done = records.finished(experiment, self.name, seed, os.path.relpath(run_dir, experiment.model_dir))
            if done is not None:
                return done
            return _Run(self, experiment, seed, run_dir).train()


class _Run:
    """One population, from its state file (or its start) to its record."""

    def __init__(self, pbt: Pbt, experiment, seed: int, run_dir: str):
        self.pbt, self.experiment, self.seed, self.run_dir = pbt, experiment, seed, run_dir
        self.space, self.interval = pbt.space, pbt.every(experiment)
        self.rounds = math.ceil(experiment.train_steps / self.interval)
        self.maximize = pbt.metric == "dev_bleu"
        self.program = experiment.member_program(list(self.space))
        self.state = self._load()

    # --- the population's state ---------------------------------------------------

    def _path(self) -> str:
        return os.path.join(self.run_dir, STATE_FILE)

    def _load(self) -> Dict:
        settings = self.pbt.settings(self.experiment)
        saved = hpo_io.read_json(self._path()) if distributed.is_leader() else None
        saved = distributed.broadcast(saved)
        if saved is not None:
            if saved.get("settings") != settings:
                raise UserError(f"pbt: {self.run_dir} holds a population with other settings "
                                f"({_difference(saved.get('settings') or {}, settings)}); give another MODEL_DIR, "
                                f"or remove {self.run_dir} to start it over")
            return saved
        rng = np.random.default_rng([self.seed, 0x7B7])  # the start's own stream (round r's: [seed, r + 1])
        base = self.experiment.base_hparams()
        members = []
        for i in range(self.pbt.population):
            values = {**base, **population.sample(self.space, rng)}
            members.append({"member": i, "seed": self.seed * 100_003 + i, "values": values,
                            "lineage": [[0, values]], "steps": 0, "wall_seconds": 0.0, "scores": [],
                            "diverged": None})
        return {"settings": settings, "round": 0, "members": members, "exploits": [], "anytime": [],
                "pending": None}

    def _save(self) -> None:
        if distributed.is_leader():
            hpo_io.write_json(self._path(), self.state)

    def _member_dir(self, i: int) -> str:
        return os.path.join(self.run_dir, f"member_{i}")

    # --- rounds ---------------------------------------------------------------------

    def train(self) -> Dict:
        while True:
            if self.state["pending"]:
                self._exploit(self.state["pending"])
            r = self.state["round"]
            end = min((r + 1) * self.interval, self.experiment.train_steps)
            for member in self.state["members"]:
                if len(member["scores"]) <= r:
                    self._train_segment(member, r, end)
            if end == self.experiment.train_steps:
                return self._record()
            self._plan(r, end)

    def _train_segment(self, member: Dict, r: int, end: int) -> None:
        preemption.check(f"{self.run_dir}, between members")
        start = r * self.interval
        if member["diverged"]:  # not copied over since: it stays where it stopped
            member["scores"].append(None)
            self._save()
            return
        began = time.time()
        fit = self.experiment.train_member(self.program, self._member_dir(member["member"]), member["seed"],
                                           member["values"], until=end)
        member["wall_seconds"] += time.time() - began
        if fit.diverged:
            member["diverged"] = fit.diverged
            member["steps"] += fit.diverged["step"] - start
            member["scores"].append(None)
        else:
            last = fit.eval_history[-1]
            score = {"step": end, "dev_loss": last.get("loss"), "dev_bleu": last.get("bleu"),
                     "values": {k: member["values"][k] for k in self.space}}  # what the segment trained with
            if end == self.experiment.train_steps and self.maximize:  # the last evaluation decodes nothing
                score["dev_bleu"] = self.experiment.evaluation.dev_metrics(self.experiment)(fit.state.params)["bleu"]
            member["steps"] += end - start
            member["scores"].append(score)
        self._save()

    def _scores(self, r: int) -> List:
        key = self.pbt.metric
        return [(m["scores"][r] or {}).get(key) for m in self.state["members"]]

    def _plan(self, r: int, step: int) -> None:
        """Ranks round r, draws its exploits and explored values, and notes them before any copy."""
        members = self.state["members"]
        rng = np.random.default_rng([self.seed, r + 1])
        plan = []
        for target, source in population.exploits(self._scores(r), self.maximize, self.pbt.quantile, rng):
            values = population.explore(members[source]["values"], self.space, rng, self.pbt.factors,
                                        self.pbt.resample_probability)
            plan.append({"round": r, "step": step, "target": target, "source": source,
                         "values": {**members[source]["values"], **values}})
        self.state["anytime"].append(self._anytime(r))
        self.state["pending"] = {"round": r, "step": step, "plan": plan}
        self._save()

    def _exploit(self, pending: Dict) -> None:
        """Copies each planned source into its target, then takes the round's decisions (a rerun
        after a kill in between repeats every copy: each gives the same checkpoint)."""
        members = self.state["members"]
        for e in pending["plan"]:
            source, target = members[e["source"]], members[e["target"]]
            self.experiment.copy_member(self.program, self._member_dir(e["source"]), self._member_dir(e["target"]),
                                        target["seed"], e["step"], e["values"])
            faults.point("exploit")  # a copy made, the round's state not yet written
        for e in pending["plan"]:
            source, target = members[e["source"]], members[e["target"]]
            target["values"] = e["values"]
            target["lineage"] = [seg for seg in source["lineage"] if seg[0] < e["step"]] + [[e["step"], e["values"]]]
            target["diverged"] = None
            self.state["exploits"].append(e)
        self.state["round"], self.state["pending"] = pending["round"] + 1, None
        self._save()

    def _anytime(self, r: int) -> Dict:
        """The population after round r: its compute so far and its best member's dev scores."""
        best = population.rank(self._scores(r), self.maximize)[0]
        score = self.state["members"][best]["scores"][r] or {}
        return {"round": r, "step": score.get("step"), "member": best,
                "compute_steps": float(sum(m["steps"] for m in self.state["members"])),
                "dev_loss": score.get("dev_loss"), "dev_bleu": score.get("dev_bleu")}

    # --- the row ----------------------------------------------------------------------

    def _record(self) -> Dict:
        experiment, members = self.experiment, self.state["members"]
        last = self.rounds - 1
        best = population.rank(self._scores(last), self.maximize)[0]
        member = members[best]
        member_dir = self._member_dir(best)
        fit = experiment.train_member(self.program, member_dir, member["seed"], member["values"],
                                      until=experiment.train_steps)  # restores its end
        compute = sum(m["steps"] for m in members)
        record = experiment.member_record(self.pbt.name, self.seed, self.run_dir, fit, member_dir, member["seed"],
                                          sum(m["wall_seconds"] for m in members), compute)
        names = list(self.space)
        schedule = _schedule(member["lineage"], names, experiment.train_steps)
        schedule_path = os.path.join(self.run_dir, SCHEDULE_FILE)
        if distributed.is_leader():
            write_schedule(schedule_path, names, schedule, range(experiment.train_steps))
        anytime = [*self.state["anytime"], {**self._anytime(last), "dev_loss": record.get("dev_loss"),
                                            "dev_bleu": record.get("dev_bleu"), "member": best}]
        record.update({
            "selected_run_dir": os.path.relpath(member_dir, experiment.model_dir),
            "hparams": {k: records.as_float(v) for k, v in member["values"].items()},
            "train_runs": len(members), "total_train_steps": int(compute),
            "schedule_file": os.path.relpath(schedule_path, experiment.model_dir),
            "learned_schedule": summarise(names, schedule),
            "anytime": anytime,
            "pbt": {**self.state["settings"], "best_member": best, "rounds": self.rounds,
                    "exploits": self.state["exploits"],
                    "members": [{"member": m["member"], "seed": m["seed"], "values": m["values"],
                                 "steps": m["steps"], "diverged": m["diverged"],
                                 "scores": m["scores"], "lineage": m["lineage"]} for m in members]},
        })
        records.add(experiment.model_dir, record)
        return record


def _schedule(lineage: List, names: Sequence[str], steps: int) -> np.ndarray:
    """[steps, names]: the values each step of a lineage trained with."""
    out = np.zeros((steps, len(names)), np.float64)
    for start, values in lineage:
        out[start:] = [float(values[n]) for n in names]
    return out


def _difference(saved: Dict, ours: Dict) -> str:
    keys = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
    return ", ".join(f"{k} {saved.get(k)!r} there, {ours.get(k)!r} here" for k in keys)
