"""What makes two runs the same configuration: the table averages seeds only over such runs.

A run's configuration is its budget (`train_steps`, which every record has),
its *setup*, the gin config it ran with less MODEL_DIR (where results go, not
how they are made) and less the strategy classes' bindings (`hpo run` binds
Fixed, Guided, OptunaSearch and Pbt alike for every strategy it runs), and its
strategy's own *settings*:

- fixed: the values it trained with (`hparams`; a replay's replayed names aside,
  they come from a per-seed schedule) and which names it replayed; a replay also
  carries its `Guided` bindings (`hpo run --claims` replays with the guided run's
  own, so replays of schedules learned differently are different rows); the replay
  mode sets rows apart before this (row_groups);
- guided: its `Guided` bindings;
- optuna: its study's settings (sampler, pruner, trials, ...); its setup, as every strategy's,
  from the gin config its record carries (the study's last process's);
- pbt: its `Pbt` bindings and the search space it explored, as its record says it
  (`pbt.search_space`: Pbt.search_space, or OptunaSearch's when that is unbound).

Seeds are no part of it: they are passed to runs, never bound in gin. A record
without a (readable) gin config has an unknown setup (None).
"""

import json
from typing import Dict, NamedTuple, Optional, Tuple

# The gin class of each strategy: its bindings are that strategy's settings.
STRATEGY_CLASSES = {"fixed": "Fixed", "guided": "Guided", "optuna": "OptunaSearch", "pbt": "Pbt"}
# Study fields that differ by seed or by outcome, not by configuration.
STUDY_OUTCOME_FIELDS = ("name", "best_trial")

Items = Tuple[Tuple[str, object], ...]  # sorted (name, value) pairs: hashable, comparable


class RunConfig(NamedTuple):
    train_steps: object
    setup: Optional[Items]  # None: the record has no gin config
    settings: Items


def run_config(record: Dict) -> RunConfig:
    strategy = str(record.get("strategy"))
    bindings = gin_bindings(record.get("gin_config"))
    setup = None if bindings is None else _items(
        {k: v for k, v in bindings.items() if not _strategy_of(k) and not _is_model_dir(k)})
    return RunConfig(_hashable(record.get("train_steps")), setup, _items(_settings(record, strategy, bindings or {})))


def runs_defaults(record: Dict) -> bool:
    """Whether the record is of a fixed run that overrides nothing (no Fixed.hparams): the configured
    defaults. (Not part of the configuration: `Fixed.hparams = {'learning_rate': 1.0}` may equal them.)"""
    bindings = gin_bindings(record.get("gin_config"))
    return record.get("strategy") == "fixed" and bindings is not None and not _fixed_overrides(bindings)


def gin_bindings(text) -> Optional[Dict[str, object]]:
    """{binding: value} of a record's gin config (gin's own parser); None without one, or
    for text gin cannot parse (a hand-edited record): an unknown setup.

    Binding names as gin writes them: `scope/Configurable.param`, or the macro's name.
    """
    if not isinstance(text, str):
        return None
    from gin import config_parser
    try:
        statements = list(config_parser.ConfigParser(text, _Literal()))
    except (SyntaxError, ValueError):
        return None
    return {_binding_name(s): _hashable(s.value) for s in statements
            if isinstance(s, config_parser.BindingStatement)}


class _Literal:
    """Gin references and macros kept as the text gin writes (`@name()`, `%NAME`), not evaluated."""

    def configurable_reference(self, name: str, evaluate: bool) -> str:
        return f"@{name}()" if evaluate else f"@{name}"

    def macro(self, name: str) -> str:
        return f"%{name}"


def _binding_name(statement) -> str:
    scope = f"{statement.scope}/" if statement.scope else ""
    arg = f".{statement.arg_name}" if statement.arg_name else ""
    return f"{scope}{statement.selector}{arg}"


def _hashable(value):
    """Numbers, strings, booleans and None as they are; containers as canonical JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _items(values: Dict[str, object]) -> Items:
    return tuple(sorted(values.items()))


def _configurable(binding: str) -> str:
    """`scope/module.Class.param` -> `Class`; a macro's name stays itself."""
    selector = binding.rsplit("/", 1)[-1]
    parts = selector.split(".")
    return parts[-2] if len(parts) > 1 else parts[0]


def _strategy_of(binding: str) -> Optional[str]:
    classes = {cls: name for name, cls in STRATEGY_CLASSES.items()}
    return classes.get(_configurable(binding))


def _is_model_dir(binding: str) -> bool:
    return binding == "MODEL_DIR" or binding.endswith(".model_dir")


def _fixed_overrides(bindings: Dict[str, object]) -> bool:
    """Whether Fixed.hparams sets any value (an empty mapping overrides nothing)."""
    return any(_strategy_of(k) == "fixed" and k.endswith(".hparams") and v not in (None, "{}")
               for k, v in bindings.items())


def _settings(record: Dict, strategy: str, bindings: Dict[str, object]) -> Dict[str, object]:
    if strategy == "fixed":
        return _fixed_settings(record, bindings)
    if strategy == "optuna":
        study = record.get("study") if isinstance(record.get("study"), dict) else {}
        return {f"study.{k}": _hashable(v) for k, v in study.items() if k not in STUDY_OUTCOME_FIELDS}
    own = {k: v for k, v in bindings.items() if _strategy_of(k) == strategy}
    if strategy == "pbt":  # the space it searched, as the run resolved it (unbound: OptunaSearch's)
        pbt = record.get("pbt") if isinstance(record.get("pbt"), dict) else {}
        own.update({"pbt.search_space": _hashable(pbt["search_space"])} if "search_space" in pbt else {})
    return own


def _fixed_settings(record: Dict, bindings: Dict[str, object]) -> Dict[str, object]:
    replay = record.get("replay")
    replayed = list(replay.get("hparams") or []) if isinstance(replay, dict) else []
    hparams = record.get("hparams") if isinstance(record.get("hparams"), dict) else {}
    settings = {k: _hashable(v) for k, v in hparams.items() if k not in replayed}
    if replay:
        settings["replayed"] = ",".join(sorted(replayed))
        source = replay.get("of", "guided") if isinstance(replay, dict) else "guided"  # who learned it
        settings.update({k: v for k, v in bindings.items() if _strategy_of(k) == source})
    return settings
