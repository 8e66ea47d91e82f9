"""The PBT strategy: Population Based Training (Jaderberg et al. 2017), the other online
schedule learner beside the guided strategy.

A population of members trains with values drawn from OptunaSearch's search space.
Every `interval` steps the members are ranked on dev; each member of the bottom
quantile copies the checkpoint of one drawn from the top (exploit) and perturbs or
resamples its values (explore). The row is the best member at the end; its compute
is the whole population's, and its lineage's values step by step are its learned
schedule (hparams.csv, replayable with the fixed strategy as guided's is).

The population's state (each member's values, steps, scores and lineage, the
exploits) lives in a study of the Optuna storage (`population_store`), written after
each member's segment and each round's plan and exploits. Any number of `hpo run`
processes on one MODEL_DIR and storage train the population together, each taking a
member's segment (or a round's exploits) under a lock that dies with it; a rerun after
kill -9 continues where the population stopped. Exploit and explore draw from a generator
seeded by (seed, round), and each member trains as it would alone, so however many
workers train it, and however often they are stopped, the population decides as one
uninterrupted process would.
"""

import json
import math
import os
import time
from typing import Dict, List, Sequence

import gin
import numpy as np

from hpo.core import distributed, faults, io as hpo_io, preemption
from hpo.core.errors import UserError, positive_int
from hpo.flow import records
from hpo.flow.schedules import GROUPS_FILE, SCHEDULE_FILE, summarise, write_schedule
from hpo.method import groups as param_groups
from hpo.strategies import population
from hpo.strategies.base import Strategy
from hpo.strategies.population_store import PopulationStore

POLL_SECONDS = 0.5  # how often a worker waiting for the others' members looks again
DEFAULT_ROUNDS = 8  # interval None: TRAIN_STEPS / 8
# A group's multiplier of the learning rate, where the search space names none: a factor of 4
# either way (the global rate is searched too).
GROUP_RATE_SPACE = {"low": 0.25, "high": 4.0, "log": True}


@gin.configurable
class Pbt(Strategy):
    """`population` members; every `interval` steps (None: TRAIN_STEPS / 8) the bottom
    `quantile` copy a top member and explore: each value is resampled from the search space
    with `resample_probability`, else multiplied by a factor drawn from `factors`. Ranked by
    `metric` ('dev_loss', or 'dev_bleu' on the part of dev that intermediate evaluations
    decode). `search_space` None: OptunaSearch's (so the two search the same space); `storage`
    None: OptunaSearch's (where the population's state lives, shared by its workers).
    `groups` (a preset or {name: regex}, as `Guided.groups`): per-group learning-rate
    multipliers `learning_rate/<group>` join the tuned values, drawn from the search space's
    entry of that name, else from GROUP_RATE_SPACE."""

    name = "pbt"

    def __init__(self, population: int = 4, interval: int = None, quantile: float = 0.25,
                 resample_probability: float = 0.25, factors: Sequence[float] = (0.8, 1.25),
                 metric: str = "dev_loss", search_space=None, storage: str = None, groups=None):
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
        self.search_space, self.storage = search_space, storage
        self.groups = param_groups.resolve(groups, "Pbt.groups")
        strays = [k for k in search_space or {} if param_groups.is_group_rate(k)
                  and k[len(param_groups.PREFIX):] not in self.groups]
        if strays:
            raise UserError(f"pbt: Pbt.search_space tunes {', '.join(strays)}, a group Pbt.groups does not define "
                            f"(its groups: {', '.join(self.groups) or 'none'})")

    @property
    def space(self) -> Dict[str, Dict]:
        from hpo.strategies.optuna_search import OptunaSearch  # its validation and default
        # None must not reach OptunaSearch as an argument: it would override a gin binding of its space.
        space = (OptunaSearch() if self.search_space is None else OptunaSearch(search_space=self.search_space)).space
        return {**space, **{param_groups.rate_name(g): space.get(param_groups.rate_name(g), GROUP_RATE_SPACE)
                            for g in self.groups}}

    def settings(self, experiment) -> Dict:
        """What a population's state must have been made with (as JSON reads it back)."""
        return json.loads(json.dumps({"population": self.population, "interval": self.every(experiment), "quantile": self.quantile,
                "resample_probability": self.resample_probability, "factors": self.factors,
                "metric": self.metric, "search_space": self.space, "groups": self.groups,
                "train_steps": experiment.train_steps}))

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
            if not param_groups.is_group_rate(name):
                experiment.check_settable(name, "pbt")
        if self.groups:  # before anything trains: every group holds a parameter, none holds one twice
            param_groups.labels(self.groups, experiment.param_shapes(), "Pbt.groups")
        run_dir = experiment.run_dir(self.name, seed)
        done = records.finished(experiment, self.name, seed, os.path.relpath(run_dir, experiment.model_dir))
        if done is not None:
            return done
        # Not `hpo_io.training(run_dir)`: several workers train this population, a member each at a time.
        return _Run(self, experiment, seed, run_dir, self.store(experiment, seed) if distributed.is_leader() else None).train()

    def store(self, experiment, seed: int) -> PopulationStore:
        """The population's state: a study of the storage (`storage`, else OptunaSearch's)."""
        from hpo.strategies.optuna_search import OptunaSearch, default_study_name
        search = OptunaSearch(storage=self.storage) if self.storage else OptunaSearch()
        return PopulationStore(search.url(experiment, "pbt"), f"pbt-{default_study_name(experiment, seed)}",
                               experiment.model_dir, search.reconnect_seconds)


class _Run:
    """One population, from its stored state (or its start) to its record, trained by this
    process beside any others on the same store (a member or a round at a time, each under its lock)."""

    def __init__(self, pbt: Pbt, experiment, seed: int, run_dir: str, store):
        self.pbt, self.experiment, self.seed, self.run_dir, self.store = pbt, experiment, seed, run_dir, store
        self.space, self.interval = pbt.space, pbt.every(experiment)
        self.rounds = math.ceil(experiment.train_steps / self.interval)
        self.maximize = pbt.metric == "dev_bleu"
        self.program = experiment.member_program(list(self.space), pbt.groups)
        self.settings = pbt.settings(experiment)  # what every state read must match: made once, not per poll

    def _member_dir(self, i: int) -> str:
        return os.path.join(self.run_dir, f"member_{i}")

    # --- what to do next: the leader asks the store, the other hosts do what it says ---------

    def train(self) -> Dict:
        while True:
            task = distributed.broadcast(self._next() if distributed.is_leader() else None)
            try:
                if task["do"] == "done":  # another worker's row (in its MODEL_DIR, this one's: added again)
                    records.add(self.experiment.model_dir, task["record"])
                    return task["record"]
                if task["do"] == "segment":
                    self._train_segment(task["state"], task["member"])
                elif task["do"] == "exploit":
                    self._exploit(task["state"])
                else:
                    return self._record(task["state"])
            finally:
                if self.store is not None:
                    self.store.unlock_all()

    def _next(self) -> Dict:
        """The next task of this worker, its lock taken: a member's segment, a round's exploits,
        the row; or the row another worker wrote. Waits while other workers hold what is left."""
        while True:
            preemption.check(f"{self.run_dir}, between members")
            state = self._state()
            if state["record"] is not None:
                return {"do": "done", "record": state["record"]}
            r = state["round"]
            if not state["pending"]:
                for member in state["members"]:
                    if len(member["scores"]) <= r and self.store.try_lock(f"member_{member['member']}"):
                        state = self._state()  # as it is now that this worker holds the member
                        member = state["members"][member["member"]]
                        if state["round"] == r and not state["pending"] and len(member["scores"]) <= r:
                            return {"do": "segment", "state": state, "member": member["member"]}
                        self.store.unlock_all()
            if (state["pending"] or all(len(m["scores"]) > r for m in state["members"])) and self.store.try_lock("round"):
                state = self._state()
                if state["record"] is None and state["round"] == r:
                    if state["pending"]:
                        return {"do": "exploit", "state": state}
                    if all(len(m["scores"]) > r for m in state["members"]):
                        end = min((r + 1) * self.interval, self.experiment.train_steps)
                        if end == self.experiment.train_steps:
                            return {"do": "record", "state": state}
                        return {"do": "exploit", "state": self._plan(state, r, end)}
                self.store.unlock_all()
            time.sleep(POLL_SECONDS)  # the rest is other workers' (or changed as this one looked)

    def _state(self) -> Dict:
        """The stored state, or a new population's (stored first, by whoever holds the round)."""
        state = self.store.read()
        if state is None:
            while not self.store.try_lock("round"):
                time.sleep(POLL_SECONDS)
            try:
                state = self.store.read()
                if state is None:
                    state = self._start()
                    self.store.create(state)
            finally:
                self.store.unlock("round")
        if state.get("settings") != self.settings:
            raise UserError(f"pbt: {self.store.where} holds a population with other settings "
                            f"({_difference(state.get('settings') or {}, self.settings)}); give another MODEL_DIR "
                            f"or Pbt.storage, or remove {self.run_dir} and that study to start it over")
        if state.get("model_dir") != self.experiment.model_dir and not self.store.lives_in(self.experiment.model_dir):
            raise UserError(f"pbt: {self.store.where} holds the population of MODEL_DIR {state.get('model_dir')}, "
                            f"where its members' checkpoints are: its workers share one MODEL_DIR "
                            f"(this one's is {self.experiment.model_dir})")
        return state

    def _start(self) -> Dict:
        rng = np.random.default_rng([self.seed, 0x7B7])  # the start's own stream (round r's: [seed, r + 1])
        base = self.experiment.base_hparams()
        members = []
        for i in range(self.pbt.population):
            values = {**base, **population.sample(self.space, rng)}
            members.append({"member": i, "seed": self.seed * 100_003 + i, "values": values,
                            "lineage": [[0, values]], "steps": 0, "wall_seconds": 0.0, "scores": [],
                            "diverged": None})
        return {"settings": self.settings, "model_dir": self.experiment.model_dir,
                "round": 0, "members": members, "exploits": [], "anytime": [], "pending": None, "record": None}

    # --- the tasks ----------------------------------------------------------------------

    def _train_segment(self, state: Dict, i: int) -> None:
        member, r = state["members"][i], state["round"]
        start, end = r * self.interval, min((r + 1) * self.interval, self.experiment.train_steps)
        if member["diverged"]:  # not copied over since: it stays where it stopped
            member["scores"].append(None)
            return self._save_member(member)
        began = time.time()
        fit = self.experiment.train_member(self.program, self._member_dir(i), member["seed"],
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
        self._save_member(member)

    def _save_member(self, member: Dict) -> None:
        if distributed.is_leader():
            self.store.write_member(member)

    def _scores(self, state: Dict, r: int) -> List:
        key = self.pbt.metric
        return [(m["scores"][r] or {}).get(key) for m in state["members"]]

    def _plan(self, state: Dict, r: int, step: int) -> Dict:
        """Ranks round r, draws its exploits and explored values, and stores them before any copy."""
        members = state["members"]
        rng = np.random.default_rng([self.seed, r + 1])
        plan = []
        for target, source in population.exploits(self._scores(state, r), self.maximize, self.pbt.quantile, rng):
            values = population.explore(members[source]["values"], self.space, rng, self.pbt.factors,
                                        self.pbt.resample_probability)
            plan.append({"round": r, "step": step, "target": target, "source": source,
                         "values": {**members[source]["values"], **values}})
        state["anytime"].append(self._anytime(state, r))
        state["pending"] = {"round": r, "step": step, "plan": plan}
        self.store.write_population(state)
        return state

    def _exploit(self, state: Dict) -> None:
        """Copies each planned source into its target, then takes the round's decisions (a rerun
        after a kill in between repeats every copy: each gives the same checkpoint)."""
        members, pending = state["members"], state["pending"]
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
            self._save_member(target)  # the same again if a rerun repeats the round
            state["exploits"].append(e)
        state["round"], state["pending"] = pending["round"] + 1, None
        if distributed.is_leader():
            self.store.write_population(state)

    def _anytime(self, state: Dict, r: int) -> Dict:
        """The population after round r: its compute so far and its best member's dev scores."""
        best = population.rank(self._scores(state, r), self.maximize)[0]
        score = state["members"][best]["scores"][r] or {}
        return {"round": r, "step": score.get("step"), "member": best,
                "compute_steps": float(sum(m["steps"] for m in state["members"])),
                "dev_loss": score.get("dev_loss"), "dev_bleu": score.get("dev_bleu")}

    # --- the row ----------------------------------------------------------------------

    def _record(self, state: Dict) -> Dict:
        experiment, members = self.experiment, state["members"]
        last = self.rounds - 1
        best = population.rank(self._scores(state, last), self.maximize)[0]
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
            if self.pbt.groups:  # what a fixed replay of the schedule's group columns scales
                hpo_io.write_json(os.path.join(self.run_dir, GROUPS_FILE), self.pbt.groups)
        anytime = [*state["anytime"], {**self._anytime(state, last), "dev_loss": record.get("dev_loss"),
                                         "dev_bleu": record.get("dev_bleu"), "member": best}]
        record.update({
            "selected_run_dir": os.path.relpath(member_dir, experiment.model_dir),
            "hparams": {k: records.as_float(v) for k, v in member["values"].items()},
            "train_runs": len(members), "total_train_steps": int(compute),
            "schedule_file": os.path.relpath(schedule_path, experiment.model_dir),
            "learned_schedule": summarise(names, schedule),
            "anytime": anytime,
            "pbt": {**state["settings"], "best_member": best, "rounds": self.rounds,
                    "exploits": state["exploits"],
                    "members": [{"member": m["member"], "seed": m["seed"], "values": m["values"],
                                 "steps": m["steps"], "diverged": m["diverged"],
                                 "scores": m["scores"], "lineage": m["lineage"]} for m in members]},
        })
        records.add(experiment.model_dir, record)
        if distributed.is_leader():
            self.store.write_record(record)  # the other workers' answer
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
