"""Kill -9 and preemption harness: `hpo run` stopped at random moments and rerun must lose nothing.

For each strategy (fixed, guided and optuna; `--strategies` picks, e.g. pbt) it stops `hpo run` and reruns it, `--kills_per_strategy` times
(a strategy that finishes before its count is a problem). Each stop lands at a fault
point (`hpo/core/faults.py`) of a phase — training, a checkpoint write, an evaluation or
decoding, a record write, an Optuna trial: each phase at least once — or, once per
strategy, at a random moment (a random delay after the run starts working: a file
under MODEL_DIR changes); the phase of every stop is recorded. After the stops it
lets one run of all the strategies finish. An uninterrupted run of the same
command runs beside it, and the two results must agree. A stop is SIGKILL, or
with --preempt_every N every N-th at a fault point is SIGTERM (a preemption): the run must exit
with status 143 within its grace period, its newest checkpoint at the step it
says it stopped at, where the rerun resumes. Every process's exit status is checked.

    python experiments/kill_harness.py --kills_per_strategy 30 --work_dir /tmp/kills -- \\
        --gin_file=test.gin --gin.TRAIN_STEPS=40

Exit status 0 when every check passed; the report says what was killed where.
"""

import argparse
import csv
import glob
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hpo.core import faults  # noqa: E402

STRATEGIES = ("fixed", "guided", "optuna")
# What a stop legitimately changes in a CSV: the time, and the steps a killed attempt had run.
EFFORT_COLUMNS = ("wall_seconds", "total_train_steps", "compute_steps_mean", "relative_compute")
RESULT_FIELDS = ("test_bleu", "dev_bleu", "test_chrf", "dev_chrf", "dev_loss", "hparams", "train_steps")


def cold_process(argv: List[str], env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """`hpo ARGV` as a user starts it: a new interpreter."""
    return subprocess.Popen([sys.executable, "-m", "hpo.cli.main", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def hpo_run(model_dir: str, args: List[str], strategies, launch: Callable = cold_process, env=None):
    """`hpo run` of the strategies; `launch(argv, env)` gives a process with pid, poll, kill, wait and
    communicate (the test's launcher forks warm processes: no interpreter start-up to wait for)."""
    return launch(["run", f"--model_dir={model_dir}", f"--strategy={','.join(strategies)}", *args], env)


def _newest(model_dir: str, since: float) -> Optional[str]:
    """The most recently changed path under model_dir changed after `since`, if any."""
    newest, when = None, since
    for root, dirs, files in os.walk(model_dir):
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                # Summaries change all the time; the run lock is taken at the start, not a moment of work.
                changed = os.stat(path).st_mtime if ".tfevents." not in name and name != "run.lock" else 0
            except FileNotFoundError:  # renamed or removed as we looked
                continue
            if changed > when:
                newest, when = path, changed
    return newest and os.path.relpath(newest, model_dir)


def phases_of(strategy: str) -> List[str]:
    """The phases a strategy's stops must cover ("exploit", PBT's, comes late in a population:
    tests/test_pbt.py stops there by hand)."""
    return [p for p in faults.PHASES if (p != "optuna" or strategy == "optuna") and p != "exploit"]


def plan(strategy: str, stops: int, rng: random.Random) -> List[Optional[Tuple[str, int]]]:
    """Where each stop of a strategy lands: (phase, n), the n-th point of phase in that process,
    or None, a random moment. The phases that come only while steps or trials remain go
    first, in random order; then the random moment and stops drawn at random; evaluation and
    record writes last (a run decodes and writes its record until it has written it)."""
    # A population passes each point once per member and round: its stops reach later members,
    # rounds and exploits' copies (its fallback comes later too: `fallback`).
    reach = 3 if strategy == "pbt" else 1
    early = [("training", rng.randint(1, 3 * reach)), ("checkpoint", rng.randint(1, reach))] + (
        [("optuna", 1)] if strategy == "optuna" else [])
    rng.shuffle(early)
    late = [("evaluation", rng.randint(1, reach)), ("record", rng.randint(1, 2 * reach))]
    drawn = [(rng.choice([p for p in phases_of(strategy) if p != "record"]), rng.randint(1, reach))
             for _ in range(max(0, stops - len(early) - len(late) - 1))]
    return (early + [None] + drawn + late)[:stops]


# Where a stop's own point never comes (the run went past it), its process stops at its first
# record write instead: a stop never lets the run finish, so every strategy gets its count.
FALLBACK = "record@1"


def fallback(strategy: str) -> str:
    """A population writes its state after each member's segment: its fallback is its third write."""
    return "record@3" if strategy == "pbt" else FALLBACK


def kill_once(model_dir: str, args: List[str], strategy: str, rng: random.Random,
              window: float, launch: Callable = cold_process, preempt: bool = False,
              at: Optional[Tuple[str, int]] = None, phase_file: str = "") -> Optional[Dict]:
    """Starts the strategy and stops it: at its `at` = (phase, n) fault point with SIGKILL or
    (`preempt`) SIGTERM, or (None) `uniform(0, window)` s after it starts working with SIGKILL
    (a SIGTERM there could let the run finish its last record). Returns {"phase": what it
    was doing, "moment": the path it touched last, "preempted": …, "problems": […]}, or None if it
    finished first."""
    start = time.time()
    stop_at = [f"{at[0]}@{at[1]}" + (":TERM" if preempt else "")] if at else []
    if not at or at[0] != "record":  # (a record stop is its own: a run writes several records at its end)
        stop_at.append(fallback(strategy))
    process = hpo_run(model_dir, args, [strategy], launch,
                      {"HPO_PHASE_FILE": phase_file, "HPO_STOP_AT": ",".join(stop_at)})
    signalled = None
    if at is None:
        while _newest(model_dir, start) is None and process.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0, window))
        if process.poll() is None:
            phase, _, _ = faults.read_phase(phase_file)
            signalled = signal.SIGKILL
            process.kill()
    _, err = process.communicate(timeout=1800)
    if signalled is None:  # it stopped itself, at its point or the fallback's, or it ended
        _, phase, sent = faults.read_phase(phase_file)
        if phase is None:
            if process.returncode == 0:
                return None
            raise AssertionError(f"a rerun of {strategy} failed ({process.returncode}): {err[-2000:]}")
        signalled = signal.SIGTERM if preempt and at and phase == at[0] else signal.SIGKILL
    found = {"phase": phase, "moment": _newest(model_dir, start) or "start-up", "preempted": None, "problems": []}
    if signalled == signal.SIGKILL:
        if process.returncode != -signal.SIGKILL:
            found["problems"].append(f"{strategy}: SIGKILL in {phase}: exit status {process.returncode}")
        return found
    stopped = preempted(model_dir, process.returncode, time.time() - sent, err)
    return {**found, "preempted": stopped["preempted"],
            "problems": [f"{strategy}, stopped in {phase}: {p}" for p in stopped["problems"]]}


def preempted(model_dir: str, status: int, seconds: float, err: str) -> Dict:
    """What a SIGTERM did: the exit status (143; 0 if the run ended first; -15 if it came before
    hpo watched signals), the seconds to exit, the step it stopped at, and what is wrong."""
    problems = [] if status in (143, 0, -signal.SIGTERM) else [f"SIGTERM: exit status {status}: {err[-500:]}"]
    stop = re.search(r"stopped by SIGTERM, (\S+) at step (\d+)", err)
    step = int(stop.group(2)) if stop else None
    if stop:  # the rerun resumes at the newest checkpoint: the step it stopped at
        kept = [int(s) for s in os.listdir(os.path.join(stop.group(1), "checkpoints")) if s.isdigit()]
        if max(kept, default=None) != step:
            problems.append(f"SIGTERM at step {step} of {os.path.relpath(stop.group(1), model_dir)}: "
                            f"newest checkpoint {max(kept, default=None)}")
    return {"preempted": {"status": status, "seconds": seconds, "step": step}, "problems": problems}


def finish(model_dir: str, args: List[str], launch: Callable = cold_process, strategies=STRATEGIES) -> None:
    process = hpo_run(model_dir, args, strategies, launch)
    _, err = process.communicate(timeout=1800)
    if process.returncode != 0:
        raise AssertionError(f"the last rerun failed ({process.returncode}): {err[-2000:]}")


def check(model_dir: str, reference_dir: str, n_trials: int, strategies=STRATEGIES) -> List[str]:
    """What is wrong with model_dir's results next to the uninterrupted reference ([] when nothing)."""
    problems = []
    for path in glob.glob(f"{model_dir}/**/*.json", recursive=True):
        try:
            with open(path) as f:
                json.load(f)
        except ValueError as e:
            problems.append(f"{os.path.relpath(path, model_dir)} does not parse: {e}")
    for path in glob.glob(f"{reference_dir}/**/*.csv", recursive=True):  # row by row (a cut file parses)
        name = os.path.relpath(path, reference_dir)
        ours, theirs = (_csv_rows(os.path.join(d, name)) for d in (model_dir, reference_dir))
        if ours != theirs:
            first = next((i for i, (a, b) in enumerate(zip(ours or [], theirs)) if a != b),
                         min(len(ours or []), len(theirs)))
            problems.append(f"{name}: {len(ours) if ours is not None else 'no'} rows, the uninterrupted run "
                            f"{len(theirs)}; they differ from row {first}")
    rows = json.load(open(os.path.join(model_dir, "comparison.json")))
    keys = [(r["task"], r["strategy"], r["seed"]) for r in rows]
    if sorted(keys) != sorted(set(keys)) or len(rows) != len(strategies):
        problems.append(f"rows are not each (task, strategy, seed) once: {keys}")
    reference = {r["strategy"]: r for r in json.load(open(os.path.join(reference_dir, "comparison.json")))}
    for row in rows:
        expected = reference[row["strategy"]]
        for field in RESULT_FIELDS:
            if row.get(field) != expected.get(field):
                problems.append(f"{row['strategy']}: {field} {row.get(field)} != uninterrupted {expected.get(field)}")
        if row["strategy"] in ("guided", "pbt"):
            schedule, expected_schedule = (open(os.path.join(d, r["schedule_file"])).read()
                                           for d, r in ((model_dir, row), (reference_dir, expected)))
            if schedule != expected_schedule:
                problems.append(f"{row['strategy']}: the learned schedule differs from the uninterrupted run's")
        if row["strategy"] == "pbt":  # every member's steps, scores and lineage, every exploit
            ours, theirs = (_population(r) for r in (row, expected))
            if ours != theirs:
                problems.append(f"pbt: the population {ours} != uninterrupted {theirs}")
            if row["compute_steps"] != expected["compute_steps"]:
                problems.append(f"pbt: compute {row['compute_steps']} != uninterrupted {expected['compute_steps']}")
        if row["strategy"] == "optuna":
            done = [t for t in row["trials"] if t["state"] in ("COMPLETE", "PRUNED")]
            if len(row["trials"]) != n_trials or len(done) != n_trials:
                problems.append(f"optuna: {len(done)} finished trials of {len(row['trials'])}, not {n_trials}")
            # Place by place (a retry's trial number differs; what it ran and found must not).
            ours, theirs = ([(t["params"], t["objective"]) for t in r["trials"]] for r in (row, expected))
            if ours != theirs:
                problems.append(f"optuna: trials {ours} != uninterrupted {theirs}")
    return problems


def _population(record: Dict) -> Dict:
    pbt = record["pbt"]
    return {"exploits": pbt["exploits"], "best": pbt["best_member"], "anytime": record["anytime"],
            "members": [{k: m[k] for k in ("values", "steps", "scores", "lineage", "diverged")} for m in pbt["members"]]}


def _csv_rows(path: str) -> Optional[List[Dict]]:
    """A CSV's rows without the effort columns; None if it is missing."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in EFFORT_COLUMNS} for row in csv.DictReader(f)]


def run(work_dir: str, args: List[str], kills_per_strategy: int, seed: int = 0, window: float = 3.0,
        n_trials: int = 3, launch: Callable = cold_process, preempt_every: int = 0,
        strategies=STRATEGIES) -> Dict:
    """Kills and reruns in work_dir/killed beside an uninterrupted run in work_dir/uninterrupted;
    with `preempt_every` N, every N-th stop is SIGTERM instead."""
    rng = random.Random(seed)
    model_dir, reference_dir = os.path.join(work_dir, "killed"), os.path.join(work_dir, "uninterrupted")
    args = [*args, f"--gin.OptunaSearch.n_trials={n_trials}"]
    reference = hpo_run(reference_dir, args, strategies, launch)
    kills: Dict[str, List[str]] = {s: [] for s in strategies}
    preemptions: Dict[str, List[Dict]] = {s: [] for s in strategies}
    problems = []
    for strategy in strategies:
        for at in plan(strategy, kills_per_strategy, rng):
            count = sum(map(len, kills.values())) + 1
            stop = kill_once(model_dir, args, strategy, rng, window, launch,
                             preempt=bool(preempt_every) and count % preempt_every == 0 and at is not None, at=at,
                             phase_file=os.path.join(work_dir, f"phase-{count}"))
            if stop is None:
                problems.append(f"{strategy}: finished after {len(kills[strategy])} of {kills_per_strategy} stops")
                break
            kills[strategy].append(f"{stop['phase']} ({stop['moment']})")
            if stop["preempted"]:
                preemptions[strategy].append(stop["preempted"])
            problems += stop["problems"]
        missed = set(phases_of(strategy)) - {k.split(" ")[0] for k in kills[strategy]}
        if missed:
            problems.append(f"{strategy}: no stop in {', '.join(sorted(missed))}")
    finish(model_dir, args, launch, strategies)
    _, err = reference.communicate(timeout=1800)
    if reference.returncode != 0:
        raise AssertionError(f"the uninterrupted run failed: {err[-2000:]}")
    return {"kills": kills, "preemptions": preemptions,
            "problems": problems + check(model_dir, reference_dir, n_trials, strategies)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Arguments after -- go to every `hpo run`.")
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--kills_per_strategy", type=int, default=10)
    parser.add_argument("--window", type=float, default=3.0, help="seconds: kills land in [0, window) of work")
    parser.add_argument("--n_trials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preempt_every", type=int, default=0,
                        help="every N-th stop is SIGTERM (a preemption), not SIGKILL (default: none)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help=f"comma-separated strategies to stop (default: {','.join(STRATEGIES)}; pbt too)")
    argv = sys.argv[1:] if argv is None else argv
    ours, hpo_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    flags = parser.parse_args(ours)
    report = run(flags.work_dir, hpo_args or ["--gin_file=test.gin"], flags.kills_per_strategy, flags.seed,
                 flags.window, flags.n_trials, preempt_every=flags.preempt_every,
                 strategies=tuple(flags.strategies.split(",")))
    print(describe(report))
    return 1 if report["problems"] else 0


def describe(report: Dict) -> str:
    """The report in lines: each strategy's stops (phase and the path touched last), its
    SIGTERMs, and every problem."""
    lines = [f"{strategy}: {len(stops)} stops, in: {', '.join(stops)}" for strategy, stops in report["kills"].items()]
    lines += [f"{strategy}: {len(stops)} of them SIGTERM: " + ", ".join(
        f"status {s['status']} after {s['seconds']:.1f} s (step {s['step']})" for s in stops)
        for strategy, stops in report["preemptions"].items()]
    lines += [f"PROBLEM: {problem}" for problem in report["problems"]]
    return "\n".join(lines + ["all checks passed" if not report["problems"] else f"{len(report['problems'])} problems"])


if __name__ == "__main__":
    sys.exit(main())
