"""The table's rows as groups of runs: one per task × strategy × configuration, in table order.

A group holds one run per seed of one configuration (run_config): seeds are
averaged only over runs that differ in nothing else. Its label is the strategy,
then what sets it apart from the other rows of that task and strategy: the
replay mode, then the values that differ ('fixed (learning_rate=3)'); other
backends than the built-in engine are marked ('guided [t5x]').

The same configuration and seed recorded twice (one run copied into two model
dirs, or rerun there) counts once: the record of the model dir given last is
used, and the group says which ones it left out (`duplicates`).

Each group is compared with one fixed row (p-value, compute ÷ fixed), its
baseline: a fixed, not replayed configuration of the same task, benchmark,
backend and budget whose setup (gin config less strategy bindings) is the
group's own (or unknown, on either side).
Of several, the one run with the configured defaults (no `Fixed.hparams`);
else the one of the first model dir given, so `hpo table BASE OTHERS...` picks BASE.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

from hpo.report.record_sets import backend, dedupe, is_glue, run_path
from hpo.report.run_config import RunConfig, run_config, runs_defaults

# Known strategies first, in this order; others follow alphabetically.
STRATEGY_ORDER = ("fixed", "guided", "optuna", "pbt")
BASELINE = "fixed"
LABEL_ITEMS = 3  # differences a label shows; the group's `configuration` has them all
UNSET = object()  # a binding one configuration has and another has not
NOT_RECORDED = "no readable gin config"


@dataclasses.dataclass(eq=False)
class Group:
    family: tuple  # (glue?, task, synthetic?, backend, strategy, replay mode or None): rows told apart by config
    config: RunConfig
    records: List[Dict]  # one run per seed, in seed order
    duplicates: List[Dict]  # {seed, used, ignored}: a seed recorded more than once
    first: int  # where its first record was loaded: the model dirs' order
    defaults: bool  # a fixed configuration some run of which set no Fixed.hparams
    label: str = ""
    configuration: str = ""  # every difference from the family's other configurations
    order: tuple = ()
    baseline: Optional["Group"] = None

    @property
    def task(self) -> str:
        return self.family[1]

    @property
    def strategy(self) -> str:
        return self.family[4]

    @property
    def glue(self) -> bool:
        return self.family[0]

    @property
    def replay_mode(self) -> Optional[str]:
        """None for runs that replayed nothing."""
        return self.family[5]


def family(record: Dict) -> tuple:
    replay = record.get("replay")
    mode = (replay.get("mode") if isinstance(replay, dict) else None) or "" if replay else None
    if isinstance(replay, dict) and replay.get("of"):  # another strategy's schedule: "pbt mean"
        mode = f"{replay['of']} {mode}".strip()
    return (is_glue(record), str(record.get("task")), bool(record.get("glue_synthetic")), backend(record),
            str(record.get("strategy")), mode)


def group_runs(records: Sequence[Dict]) -> List[Group]:
    """The rows' groups of the records, in table order, each with its baseline."""
    buckets: Dict[tuple, List[Tuple[int, Dict]]] = {}
    for index, record in enumerate(dedupe(records)):
        buckets.setdefault((family(record), run_config(record)), []).append((index, record))
    groups = [_one_per_seed(fam, config, runs) for (fam, config), runs in buckets.items()]
    families: Dict[tuple, List[Group]] = {}
    for group in groups:
        families.setdefault(group.family, []).append(group)
    for members in families.values():
        _describe(members)
    groups.sort(key=lambda g: g.order)
    for group in groups:
        group.baseline = _baseline(group, groups)
    return groups


def _one_per_seed(fam: tuple, config: RunConfig, runs: List[Tuple[int, Dict]]) -> Group:
    by_seed: Dict[object, List[Dict]] = {}
    for _, record in runs:
        by_seed.setdefault(record.get("seed"), []).append(record)
    seeds = sorted(by_seed, key=_seed_order)
    duplicates = [{"seed": s, "used": run_path(by_seed[s][-1]), "ignored": [run_path(r) for r in by_seed[s][:-1]]}
                  for s in seeds if len(by_seed[s]) > 1]
    return Group(fam, config, [by_seed[s][-1] for s in seeds], duplicates, runs[0][0],
                 any(runs_defaults(r) for _, r in runs))


def _seed_order(seed) -> tuple:
    return (not isinstance(seed, int), seed if isinstance(seed, int) else str(seed))


# ---------------------------------------------------------------- labels and order

def _describe(members: List[Group]) -> None:
    """Label, configuration and order of one family's groups, from what differs between them."""
    settings = [{**dict(g.config.settings), "train_steps": g.config.train_steps} for g in members]
    known = [_shown_setup(g.config) for g in members if g.config.setup is not None]
    setting_names, setup_names = _differing(settings), _differing(known)
    some_unknown = known and len(known) < len(members)
    for group, mine in zip(members, settings):
        setup = _shown_setup(group.config) if group.config.setup is not None else None
        values = [(n, mine.get(n, UNSET)) for n in setting_names]
        values += [(n, setup.get(n, UNSET)) for n in setup_names] if setup is not None else []
        shown = [f"{n}={_show(v)}" for n, v in values]
        shown += [NOT_RECORDED] if some_unknown and setup is None else []
        group.configuration = ", ".join(shown)
        # The label names what this row sets first; "=default" (what others set) after.
        group.label = _label(group.family, sorted(shown, key=lambda item: item.endswith("=default")))
        group.order = (*_table_position(group.family), not group.defaults,
                       tuple(_sortable(v) for _, v in values), group.first)
    _make_unique(members)


def _shown_setup(config: RunConfig) -> Dict[str, object]:
    """The setup less the bindings of the budget, which `train_steps` shows (TRAIN_STEPS, *.train_steps)."""
    return {k: v for k, v in config.setup if k.rsplit(".", 1)[-1].lower() != "train_steps"}


def _differing(configs: List[Dict]) -> List[str]:
    names = sorted({n for c in configs for n in c})
    return [n for n in names if len({_sortable(c.get(n, UNSET)) for c in configs}) > 1]


def _show(value) -> str:
    if value is UNSET:
        return "default"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _sortable(value) -> tuple:
    """Numbers in numeric order, then text, then unset."""
    if value is UNSET:
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value))
    return (1, str(value))


def _label(fam: tuple, shown: List[str]) -> str:
    *_, engine, strategy, mode = fam
    parts = [] if mode is None else [f"replay {mode}" if mode else "replay"]
    if shown:
        more = len(shown) - LABEL_ITEMS
        parts.append(", ".join(shown[:LABEL_ITEMS]) + (f", +{more} more" if more > 0 else ""))
    label = f"{strategy} ({'; '.join(parts)})" if parts else strategy
    return label if engine == "builtin" else f"{label} [{engine}]"


def _make_unique(members: List[Group]) -> None:
    """Labels cut short can coincide: number them, in table order."""
    for label in {g.label for g in members}:
        same = sorted((g for g in members if g.label == label), key=lambda g: g.order)
        for number, group in enumerate(same[1:] if len(same) > 1 else [], start=2):
            group.label = f"{label} #{number}"


def _table_position(fam: tuple) -> tuple:
    """BLEU rows first, then GLUE rows (real and synthetic data apart); by task, each backend's rows
    together; then fixed, fixed replays, guided, optuna, pbt, others alphabetically."""
    glue, task, synthetic, engine, strategy, mode = fam
    rank = STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else len(STRATEGY_ORDER)
    return glue, task, synthetic, engine != "builtin", engine, rank, strategy, mode is not None, mode or ""


# ---------------------------------------------------------------- baselines

def _baseline(group: Group, groups: Sequence[Group]) -> Optional[Group]:
    """The fixed row `group` is compared with (see the module's docstring), None if there is none."""
    same_task = group.family[:4]  # benchmark, task, real or synthetic data, backend
    candidates = [b for b in groups if b.family[:4] == same_task and b.strategy == BASELINE
                  and b.replay_mode is None and setups_match(b.config, group.config)
                  and b.config.train_steps == group.config.train_steps]
    defaults = [b for b in candidates if b.defaults]
    if defaults:
        return defaults[0]
    return min(candidates, key=lambda b: b.first) if candidates else None


def setups_match(a: RunConfig, b: RunConfig) -> bool:
    """Equal setups; a record without a gin config could have been run on any."""
    return a.setup is None or b.setup is None or a.setup == b.setup


def identity(group: Group) -> Dict:
    """The row fields that say what a row is: task, label, configuration, seeds, baseline, duplicates."""
    return {
        "task": group.task, "strategy": group.label, "configuration": group.configuration,
        "seeds": len(group.records), "seed_list": [r.get("seed") for r in group.records],
        "baseline": group.baseline.label if group.baseline else None,
        "duplicates": group.duplicates,
        "mixed_versions": mixed_versions(group.records),
    }


def mixed_versions(records: Sequence[Dict]) -> Dict[str, Dict[str, List]]:
    """{package: {version: [seeds]}} for each package the row's runs were made with at more than
    one version (records.versions; older records, which name none, are not compared)."""
    seen: Dict[str, Dict[str, List]] = {}
    for record in records:
        for package, version in (record.get("versions") or {}).items():
            seen.setdefault(package, {}).setdefault(str(version), []).append(record.get("seed"))
    return {package: by for package, by in seen.items() if len(by) > 1}
