"""`hpo`: the command line. `hpo run` trains and compares tuning strategies."""

import argparse
import contextlib
import os
import signal
import sys
from typing import List, Sequence

USAGE_RUN = """Train with one or more tuning strategies, record the results and print the comparison table.

Configuration is gin, with T5X's conventions: configs/base.gin first, then each
--gin_file (default: configs/default.gin, the embedded translation task), then
each --gin.KEY=VALUE binding. Results go to MODEL_DIR/comparison.json; running
the same command again resumes unfinished runs and skips finished ones."""

BACKENDS = ("builtin", "t5x")
# What `hpo run` runs without --strategy: the embedded demo's three, in about ten minutes on 2 cores.
DEFAULT_STRATEGIES = ("fixed", "guided", "optuna")

USAGE_PROBE = """Will one-step guidance pick too small a learning rate on this task? Answers in minutes.

From the initial state and from states along the configured run, copies of the
model train for each of Probe.horizons steps at each of Probe.multipliers (the
learning-rate multiplier), on the batches the run sees next; the guide loss
after each (the guided strategy's) is tabulated with the best multiplier per
row. Probe.values probes other hyper-parameters the same way, one at a time
(e.g. --gin.Probe.values="{'beta1': [0.5, 0.9, 0.99]}"). Same configuration flags
as `hpo run`. Writes MODEL_DIR/probe.json, probe.csv and plots/probe.png (another
hyper-parameter's: probe-<name>.csv and plots/probe-<name>.png)."""

USAGE_TABLE = """Tabulate and plot the results in one or more model dirs.

One row per task, strategy and configuration (seeds aggregated), with a paired-bootstrap
p-value against fixed where test hypotheses and references are on disk.
Writes table.md, table.csv, table.json, table.tex and plots/*.png."""


def _split_gin_bindings(argv: Sequence[str]):
    """T5X's `--gin.KEY=VALUE` flags are taken out before argparse sees the rest."""
    rest, bindings = [], []
    for arg in argv:
        if arg.startswith("--gin.") and "=" in arg:
            key, value = arg[len("--gin."):].split("=", 1)
            bindings.append((key, value))
        else:
            rest.append(arg)
    return rest, bindings


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is a UserError: one line, `hpo: error: ...`, exit status 2."""

    def error(self, message):
        from hpo.core.errors import UserError
        command = self.prog.split()[-1]
        raise UserError(f"{message} (see `hpo {'' if command == 'hpo' else command + ' '}--help`)")


def build_parser() -> argparse.ArgumentParser:
    from hpo.strategies import strategy_names
    parser = _Parser(prog="hpo", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="train with tuning strategies and record results",
                              description=USAGE_RUN, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = strategy_names()
    run.add_argument("--strategy", default=",".join(DEFAULT_STRATEGIES),
                     help=f"comma-separated strategies to run, from: {', '.join(names)} (default: "
                          f"{','.join(DEFAULT_STRATEGIES)}; pbt trains a population, Pbt.population x fixed's "
                          f"compute: add it with --strategy={','.join(names)})")
    _add_config_flags(run)
    run.add_argument("--multihost", action="store_true",
                     help="one run over several hosts: start JAX's distributed runtime first (every host runs "
                          "the same command; auto-detected on Cloud TPU VMs)")
    run.add_argument("--coordinator_address", help="with --multihost: HOST:PORT of process 0 (as T5X's flag)")
    run.add_argument("--process_count", type=int, help="with --multihost: the number of processes")
    run.add_argument("--process_index", type=int, help="with --multihost: this process's index")
    run.add_argument("--claims", action="store_true",
                     help="also replay each guided run's learned schedule with the fixed strategy (step by step, "
                          "and its mean and final values as constants), so that the table's verdicts can test "
                          "whether the schedule beats its best constant")
    probe = commands.add_parser("probe", help="will one-step guidance pick too small a learning rate?",
                                description=USAGE_PROBE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_flags(probe)
    probe.add_argument("--probe_steps", metavar="STEPS",
                       help="comma-separated steps of the run to probe from, e.g. '0,25,50' (same as "
                            "--gin.Probe.from_steps; default: 0 and 5%%, 12.5%%, 25%%, 75%% of TRAIN_STEPS)")
    table = commands.add_parser("table", help="tabulate and plot the results of model dirs",
                                description=USAGE_TABLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    table.add_argument("model_dirs", nargs="+", metavar="DIR", help="a model dir holding comparison.json")
    table.add_argument("--out", metavar="OUT_DIR",
                       help="where the tables and plots go (default: the first DIR)")
    return parser


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that say what to train, shared by `hpo run` and `hpo probe`."""
    parser.add_argument("--backend", default="builtin", choices=BACKENDS,
                        help="builtin: hpo's Flax engine (default); t5x: T5X's trainer, partitioner and "
                             "checkpoints, configured by T5X gin files (default t5x/default.gin)")
    parser.add_argument("--seeds", default="0",
                        help="comma-separated seeds ('0,1,2', run in that order; none empty or twice), or 'N:' "
                             "for seeds 0..N-1 (default: 0)")
    parser.add_argument("--model_dir", help="where results go; same as --gin.MODEL_DIR")
    parser.add_argument("--gin_file", action="append", default=[],
                        help="a gin file (repeatable), looked up in --gin_search_paths, the current "
                             "directory and the built-in configs/")
    parser.add_argument("--gin_search_paths", default="",
                        help="comma-separated directories to look up gin files and includes in")
    parser.add_argument("--verbose", action="store_true",
                        help="also show the libraries' own log lines and warnings (TensorFlow's start-up "
                             "messages, Optuna's study log and advice), hidden by default")
    parser.epilog = ("--gin.KEY=VALUE   a gin binding (repeatable), e.g. --gin.TRAIN_STEPS=200 or "
                     "--gin.OptimizerConfig.name=\"'adam'\"; a bare string value needs no quotes")


def parse_seeds(text: str) -> List[int]:
    """'0,1,2' (in the order given: '1,0' runs seed 1 first) or 'N:' for 0..N-1."""
    from hpo.core import errors
    from hpo.core.errors import UserError
    try:
        if text.endswith(":"):
            count = int(text[:-1])
            if count <= 0:
                raise ValueError
            return list(range(count))
        seeds = [int(s) for s in errors.comma_list("--seeds", text, "seed")]
    except ValueError:
        raise UserError(f"--seeds: expected e.g. '0,1,2' or '3:', got '{text}'") from None
    if len(set(seeds)) < len(seeds):  # '1,01' names one seed twice
        raise UserError(f"--seeds: seed {next(s for s in seeds if seeds.count(s) > 1)} is given twice")
    bad = next((s for s in seeds if not 0 <= s < 2 ** 31), None)
    if bad is not None:
        raise UserError(f"--seeds: a seed must be in [0, 2**31), got {bad}")
    return seeds


def _cache_compilations() -> None:
    """Keep compiled programs on disk (unless JAX_COMPILATION_CACHE_DIR says where): runs,
    trials and resumed runs that build the same steps skip compiling them again."""
    import jax
    from hpo.data.registry import data_dir
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.join(data_dir(), "jax-cache"))


def _experiment(backend: str, gin_files, bindings, search):
    """Parses the configuration for `backend` and builds its experiment."""
    if backend == "t5x":
        from hpo.cli import t5x_gin as config
        config.parse(gin_files, bindings, search)
        from hpo.t5x_backend.experiment import T5xExperiment
        return T5xExperiment
    from hpo.cli import gin_config as config
    config.parse(gin_files, bindings, search)
    from hpo.engine.experiment import Experiment
    return Experiment


def _configure(args, bindings):
    """Parses the configuration that --gin_file, --gin.KEY=VALUE, --model_dir and
    --gin_search_paths give; the experiment's constructor."""
    from hpo.core.errors import UserError
    from hpo.core.gin_syntax import gin_binding
    gin_bindings = [gin_binding(k, v) for k, v in bindings]
    if args.model_dir is not None:
        if not args.model_dir.strip():
            raise UserError("--model_dir is empty")
        gin_bindings.append(gin_binding("MODEL_DIR", args.model_dir))
    search = [p for p in args.gin_search_paths.split(",") if p]
    return _experiment(args.backend, args.gin_file, gin_bindings, search)


def run_command(args, bindings) -> int:
    from hpo.core import distributed, io as hpo_io, preemption
    from hpo.core.errors import UserError, comma_list, positive_number
    from hpo.run import replays
    from hpo.strategies import get_strategy

    if args.multihost:  # before anything touches a device, as T5X's train.py does
        distributed.initialize(args.coordinator_address, args.process_count, args.process_index)
    elif any(x is not None for x in (args.coordinator_address, args.process_count, args.process_index)):
        raise UserError("--coordinator_address, --process_count and --process_index need --multihost")
    make_experiment = _configure(args, bindings)
    _cache_compilations()
    seeds = parse_seeds(args.seeds)
    try:  # building from gin: a wrongly typed value (e.g. TRAIN_STEPS='ten') is the user's input
        strategies = [get_strategy(name) for name in comma_list("--strategy", args.strategy, "strategy")]
        experiment = make_experiment()
    except (TypeError, ValueError) as e:
        raise UserError(f"bad configuration: {e}") from e
    hpo_io.check_writable_dir(experiment.model_dir, "MODEL_DIR")  # before anything trains
    if args.claims:
        replays.check(experiment, seeds, [s.name for s in strategies])
    # Several hosts stop together or not at all: there a signal keeps its default action.
    watch = contextlib.nullcontext() if args.multihost else preemption.watching(
        positive_number(preemption.Preemption().grace_seconds, "Preemption.grace_seconds"))
    with watch:
        learned = {}  # (strategy, seed) -> the record of a run that learned a schedule
        for strategy in strategies:
            for seed in seeds:
                preemption.check()  # between runs: nothing to save
                record = strategy.run(experiment, seed)
                if strategy.name in (replays.GUIDED, replays.PBT):
                    learned[strategy.name, seed] = record
                _announce(args, experiment, record, record["strategy"])
        for seed in seeds if args.claims else ():  # after the strategies: they replay guided's (PBT's) schedules
            for source in (replays.GUIDED, replays.PBT):
                for record in replays.run(experiment, seed, learned.get((source, seed)), source):
                    _announce(args, experiment, record, replays.label(record))
    if not distributed.is_leader():
        return 0  # the leader writes and prints the results
    from hpo.report import table
    markdown, paths = table.write_report([experiment.model_dir])
    print()
    print(markdown)
    print(f"results: {os.path.join(experiment.model_dir, 'comparison.json')}; table and plots: "
          f"{', '.join(sorted(os.path.relpath(p, experiment.model_dir) for p in paths))}")
    return 0


def _announce(args, experiment, record, label: str) -> None:
    """A finished run's line (the leader prints it)."""
    from hpo.core import distributed
    if distributed.is_leader():
        print(f"{record['task']}  {label:<8} seed {record['seed']}{' (t5x)' if args.backend == 't5x' else ''}: "
              f"{_summary(experiment, record)}  ({record['wall_seconds']:.0f} s)")


def probe_command(args, bindings) -> int:
    from hpo.core import io as hpo_io  # before parsing: gin must know Probe
    from hpo.core.errors import UserError
    from hpo.run import probe
    make_experiment = _configure(args, bindings)
    _cache_compilations()
    seeds = parse_seeds(args.seeds)
    overrides = {} if args.probe_steps is None else {"from_steps": probe.parse_steps(args.probe_steps)}
    try:  # building from gin: a wrongly typed value is the user's input
        experiment = make_experiment()
        grid = probe.Probe(**overrides).grid(experiment)
    except (TypeError, ValueError) as e:
        raise UserError(f"bad configuration: {e}") from e
    hpo_io.check_writable_dir(experiment.model_dir, "MODEL_DIR")  # before anything trains
    report = probe.probe(experiment, grid, seeds, progress=lambda row: print(probe.progress_line(row), flush=True))
    paths = probe.write_results(experiment.model_dir, report)
    print()
    print(probe.markdown(report["rows"], report["grids"]))
    print("\n".join(report["verdicts"].values()))
    print("\n".join(report["run_verdicts"].values()))
    print(f"wrote {', '.join(paths)}")
    return 0


def table_command(args) -> int:
    from hpo.report import table
    markdown, paths = table.write_report(args.model_dirs, args.out)
    print(markdown, end="")
    print("\n".join(f"wrote {path}" for path in paths))
    return 0


def main(argv: Sequence[str] = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)  # seqio's and TFDS's advice is not for our users
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, bindings = _split_gin_bindings(argv)
    if "--verbose" not in rest:  # looked for before parsing: building the parser imports the libraries
        from hpo.core import quiet
        quiet.libraries()
    if not rest or rest[0].startswith("-") and rest[0] not in ("-h", "--help"):
        rest = ["run", *rest]  # `hpo` alone (or with run's flags) means `hpo run`
    from hpo.core.errors import UserError
    from hpo.core.preemption import Preempted
    parser = build_parser()
    try:
        args = parser.parse_args(rest)
        if args.command == "run":
            return run_command(args, bindings)
        if args.command == "probe":
            return probe_command(args, bindings)
        if args.command == "table":
            return table_command(args)
        parser.print_help()
        return 2
    except UserError as e:
        # gin appends "In call to configurable ..." lines; the first line is the message.
        print(f"hpo: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    except Preempted as e:
        print(f"hpo: stopped by {e}, checkpoint written; run the same command again to resume",
              file=sys.stderr)
        return e.exit_status


def _summary(experiment, record) -> str:
    diverged = record.get("diverged")
    if diverged:
        return f"diverged at step {diverged['step']} ({diverged['reason']})"
    return experiment.evaluation.summary(record)


def entry() -> None:
    """The `hpo` command. A preempted run exits at once: the interpreter's own teardown
    (JAX's, TensorFlow's threads) can take seconds a preempted VM does not have, and what
    the run must keep was written before the stop was reported."""
    status = main()
    if status in (128 + signal.SIGTERM, 128 + signal.SIGINT):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    entry()
