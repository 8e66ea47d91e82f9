"""The paper's claims as verdicts: what the runs of a comparison say about each, or why they cannot.

1. guided vs fixed: does guided tuning beat the fixed config (test BLEU)?
2. guided vs the best Optuna trial (the optuna row: its study's selected trial), compute of each;
   and at equal compute (equal_compute): guided vs Optuna at guided's compute, per seed the best
   trial by the study's objective (a dev metric) among the trials finished within guided's compute,
   in study order, its test score reported. A pruned or failed trial's steps count toward the spend;
   it is never selected. A seed without such a trial has no number (left out; none: not tested).
   The same for PBT (the pbt row: its best member at the end): guided vs PBT, at unequal compute and
   at guided's (PBT counts only at a compute covering its own: its population has no test score
   before it ends), and PBT (the subject, in the verdict's `guided` fields) vs Optuna at PBT's compute;
3. the learned schedule vs its best constant (and PBT's: its best member's lineage as
   constants, per PBT row): guided against the fixed replays of
   its own schedule as constants (its mean, its final value; `hpo run --claims`
   runs them), the better by the dev metric; the replay of the schedule itself
   must reproduce guided (dev loss within REPRODUCTION_RTOL);
4. T5 (GLUE records): guided-pretrained vs fixed-pretrained GLUE average.
Claims 2 and 3 are also read on GLUE rows, in GLUE average.

Verdicts (guided is the subject, PBT in PBT vs Optuna): "supported" when its mean is higher and
p < ALPHA, "contradicted" when lower and p < ALPHA, else "not significant";
"not tested" with the reason when a row is missing, no seed is shared, or there
is no p-value (numbers are still given). Numbers are over the seeds both rows
scored (claim_stats: the pairing and the tests).

Which rows: each guided row (a configuration) of a task gets its own verdicts,
against its baseline fixed row (row_groups: the fixed row on its setup and
budget, the configured defaults first), the Optuna and PBT rows on its setup and budget
(of several, the one sharing most seeds with it, then the first dir's) and the
replays of its own runs' schedules (same seed, the schedule file it wrote); each
PBT row gets its line against its Optuna row, chosen alike. The verdict names the
rows it compared.
"""

import os
from typing import Dict, List, Optional, Sequence

from hpo.report import claim_stats as cs, claim_text, equal_compute as ec
from hpo.report.record_sets import MODEL_DIR_FIELD, resolve
from hpo.report.row_groups import Group, group_runs, setups_match

ALPHA = 0.05
REPRODUCTION_RTOL = 1e-3  # a replayed schedule's dev loss vs guided's: float-identical on CPU
VERDICTS_FILE = "verdicts.json"
SUPPORTED, CONTRADICTED, NOT_SIGNIFICANT, NOT_TESTED = "supported", "contradicted", "not significant", "not tested"
# (id, number, title); a verdict's text also names the rows it compared.
GUIDED_VS_FIXED = ("guided_vs_fixed", 1, "guided vs fixed")
GUIDED_VS_OPTUNA = ("guided_vs_optuna", 2, "guided vs the best Optuna trial")
GUIDED_VS_OPTUNA_EQUAL = ("guided_vs_optuna_equal_compute", 2, "guided vs Optuna at guided's compute")
GUIDED_VS_PBT = ("guided_vs_pbt", 2, "guided vs PBT")
GUIDED_VS_PBT_EQUAL = ("guided_vs_pbt_equal_compute", 2, "guided vs PBT at guided's compute")
PBT_VS_OPTUNA_EQUAL = ("pbt_vs_optuna_equal_compute", 2, "PBT vs Optuna at PBT's compute")
SCHEDULE_VS_CONSTANT = ("schedule_vs_constant", 3, "the learned schedule vs its best constant")
PBT_SCHEDULE_VS_CONSTANT = ("pbt_schedule_vs_constant", 3, "PBT's learned schedule vs its best constant")
GLUE_GUIDED_VS_FIXED = ("glue_guided_vs_fixed", 4, "guided-pretrained vs fixed-pretrained GLUE average")
CONSTANT_MODES = ("mean", "final")
OPTUNA_AT_COMPUTE = ("per seed, the best trial by its study's objective among the trials finished within "
                     "{}'s compute in study order; a pruned or failed trial's steps count toward the spend, "
                     "and it is never selected")
PBT_AT_COMPUTE = "PBT counts only at a compute covering its own: its population has no test score before it ends"


def verdicts(records: Sequence[Dict], model_dir: str) -> List[Dict]:
    """One verdict per claim and guided row (PBT vs Optuna: per PBT row; per claim and task without
    one), claim by claim within a task, in table order.
    `model_dir` resolves the paths of records that carry no model dir of their own."""
    groups = group_runs(records)
    out = []
    for glue in (False, True):
        mine = [g for g in groups if g.glue == glue]
        claims = (GLUE_GUIDED_VS_FIXED if glue else GUIDED_VS_FIXED, GUIDED_VS_OPTUNA, SCHEDULE_VS_CONSTANT)
        if not mine:
            what = "no T5 runs (pretraining, then GLUE fine-tuning)" if glue else "no translation runs"
            out.append(_not_tested(claims[0], None, "glue" if glue else "bleu", what))
            continue
        for setting in _settings(mine):
            out += _setting_verdicts(setting, mine, claims, model_dir)
    return out


def _settings(groups: Sequence[Group]) -> List[tuple]:
    """Benchmark, task, data and backend of the groups, in table order."""
    return list(dict.fromkeys(g.family[:4] for g in groups))


def _setting_verdicts(setting: tuple, groups: Sequence[Group], claims, model_dir: str) -> List[Dict]:
    """The setting's verdicts, claim by claim (claim 2's lines, then 3), each claim's in table order."""
    here = [g for g in groups if g.family[:4] == setting]
    guided = [g for g in here if g.strategy == "guided"]
    benchmark, task = ("glue" if setting[0] else "bleu"), _task_name(setting)
    metric = cs.GLUE_AVERAGE if setting[0] else cs.TEST_BLEU
    guided_claims = (claims[0], claims[1], GUIDED_VS_OPTUNA_EQUAL, GUIDED_VS_PBT, GUIDED_VS_PBT_EQUAL, claims[2])
    out = [_not_tested(c, task, benchmark, f"no guided run of {task}") for c in guided_claims] if not guided else []
    for g in guided:
        out.append(_versus(claims[0], g, g.baseline, metric, model_dir,
                           f"no fixed run of {task} on {g.label}'s setup and budget ({g.config.train_steps} steps)"))
        optuna, note = _row_of("optuna", g, here)
        no_optuna = f"no Optuna study of {task} on {g.label}'s setup and budget"
        out.append(_versus(claims[1], g, optuna, metric, model_dir, no_optuna, note))
        out.append(_at_compute(GUIDED_VS_OPTUNA_EQUAL, g, optuna, metric, model_dir, no_optuna, note))
        pbt, note = _row_of("pbt", g, here)
        no_pbt = f"no PBT run of {task} on {g.label}'s setup and budget"
        out.append(_versus(GUIDED_VS_PBT, g, pbt, metric, model_dir, no_pbt, note))
        out.append(_at_compute(GUIDED_VS_PBT_EQUAL, g, pbt, metric, model_dir, no_pbt, note))
        out.append(_schedule_vs_constant(claims[2], g, here, metric, model_dir))
    pbts = [g for g in here if g.strategy == "pbt"]
    if not pbts:
        out.append(_not_tested(PBT_VS_OPTUNA_EQUAL, task, benchmark, f"no PBT run of {task}"))
    for p in pbts:
        optuna, note = _row_of("optuna", p, here)
        out.append(_at_compute(PBT_VS_OPTUNA_EQUAL, p, optuna, metric, model_dir,
                               f"no Optuna study of {task} on {p.label}'s setup and budget", note))
        out.append(_schedule_vs_constant(PBT_SCHEDULE_VS_CONSTANT, p, here, metric, model_dir, source="pbt"))
    order = [c[0] for c in (*guided_claims[:-1], PBT_VS_OPTUNA_EQUAL, guided_claims[-1], PBT_SCHEDULE_VS_CONSTANT)]
    return sorted(out, key=lambda v: order.index(v["claim"]))


def _task_name(setting: tuple) -> str:
    glue, task, synthetic, engine = setting
    return task + (" (synthetic)" if glue and synthetic else "") + ("" if engine == "builtin" else f" [{engine}]")


# ---------------------------------------------------------------- which rows

def _same_budget_and_setup(a: Group, b: Group) -> bool:
    return a.config.train_steps == b.config.train_steps and setups_match(a.config, b.config)


def _row_of(strategy: str, subject: Group, groups: Sequence[Group]):
    """The `strategy` row on the subject's setup and budget -> (it or None, a note where there were several)."""
    candidates = [g for g in groups if g.strategy == strategy and _same_budget_and_setup(g, subject)]
    if len(candidates) <= 1:
        return (candidates[0] if candidates else None), ""
    seeds = {r.get("seed") for r in subject.records}
    best = max(candidates, key=lambda g: (len(seeds & {r.get("seed") for r in g.records}), -g.first))
    name = {"optuna": "Optuna", "pbt": "PBT"}.get(strategy, strategy)
    return best, f"one of {len(candidates)} {name} rows on this setup: the one sharing most seeds, then the first dir's"


def _replays_of(guided: Group, groups: Sequence[Group], mode: str, model_dir: str, source: str = "guided"
                ) -> List[Dict]:
    """The fixed runs that replayed `mode` of one of the guided (`source`: PBT) row's runs' schedules,
    with its seed."""
    by_seed = {r.get("seed"): r for r in guided.records}
    mode = mode if source == "guided" else f"{source} {mode}"  # as row_groups.family names it
    return [r for g in groups if g.strategy == "fixed" and g.replay_mode == mode for r in g.records
            if r.get("seed") in by_seed and _replays(r, by_seed[r.get("seed")], model_dir)]


def _replays(replay: Dict, guided: Dict, model_dir: str) -> bool:
    """Whether `replay`'s schedule file is the one `guided` wrote (also when their model dir has moved:
    `Fixed` records the file's absolute path)."""
    info, schedule = replay.get("replay"), guided.get("schedule_file")
    if not isinstance(info, dict) or not isinstance(info.get("file"), str) or not isinstance(schedule, str):
        return False
    replayed = os.path.normpath(os.path.abspath(resolve(replay, model_dir, info["file"])))
    if replayed == os.path.normpath(os.path.abspath(resolve(guided, model_dir, schedule))):
        return True
    same_dir = replay.get(MODEL_DIR_FIELD) is not None and replay.get(MODEL_DIR_FIELD) == guided.get(MODEL_DIR_FIELD)
    return same_dir and replayed.endswith(os.sep + os.path.normpath(schedule))


def _label_of(runs: Sequence[Dict], groups: Sequence[Group]) -> str:
    ids = {id(r) for r in runs}
    return " + ".join(dict.fromkeys(g.label for g in groups if ids & {id(r) for r in g.records}))


# ---------------------------------------------------------------- verdicts

def _versus(claim, guided: Group, other: Optional[Group], metric: cs.Metric, model_dir: str,
            missing: str, note: str = "") -> Dict:
    task, benchmark = _task_name(guided.family[:4]), "glue" if guided.glue else "bleu"
    if other is None:
        return _not_tested(claim, task, benchmark, missing, guided.label)
    return _compare(claim, task, benchmark, guided.records, other.records, (guided.label, other.label),
                    metric, model_dir, note)


def _at_compute(claim, subject: Group, other: Optional[Group], metric: cs.Metric, model_dir: str,
                missing: str, note: str = "") -> Dict:
    """`subject` against what `other` had reached, per seed, within the subject's compute (equal_compute)."""
    task, benchmark = _task_name(subject.family[:4]), "glue" if subject.glue else "bleu"
    if other is None:
        return _not_tested(claim, task, benchmark, missing, subject.label)
    budgets = {r.get("seed"): ec.compute(r) for r in subject.records}
    of = f"{subject.label}'s compute"
    rule = OPTUNA_AT_COMPUTE.format(subject.label) if other.strategy == ec.OPTUNA else PBT_AT_COMPUTE
    theirs, unreached, picks = [], {}, []
    for run in other.records:
        seed = run.get("seed")
        if seed not in budgets:
            theirs.append(run)  # the pairing names it
            continue
        reached = (ec.Reached(None, f"{subject.label} recorded no compute") if budgets[seed] is None
                   else ec.at_budget(run, budgets[seed], of))
        if reached.run is None:
            unreached.setdefault(f"{other.label} {reached.why}", []).append(seed)
            continue
        theirs.append(reached.run)
        picks.append(_pick_text(seed, reached.run, budgets[seed]))
    why = [f"seed{'s' if len(seeds) > 1 else ''} {cs.seed_list(seeds)}: {text}" for text, seeds in unreached.items()]
    if unreached and not picks:
        return _not_tested(claim, task, benchmark, "; ".join(why) + f"; {other.label} at {of}: {rule}",
                           subject.label, other.label)
    left = {s for seeds in unreached.values() for s in seeds}
    mine = [r for r in subject.records if r.get("seed") not in left]
    note = "; ".join(filter(None, [f"{other.label} at {of}: {rule}", ", ".join(filter(None, picks)), note]))
    return _compare(claim, task, benchmark, mine, theirs, (subject.label, other.label), metric, model_dir,
                    note, unreached=why)


def _pick_text(seed, run: Dict, budget: float) -> str:
    """Which Optuna trial a seed's number is (empty for a run that is its own)."""
    if "selected_trial" not in run:
        return ""
    return (f"seed {seed}: trial {run['selected_trial']}, the best of the {run['trials_within']} "
            f"finished within {budget:.0f}")


def _compare(claim, task, benchmark, mine, theirs, labels, metric, model_dir, note="", extra=None,
             unreached: Sequence[str] = ()) -> Dict:
    """`unreached`: why seeds were left out before the pairing (equal compute)."""
    pairs = cs.pair(mine, theirs, metric, labels)
    pairs = pairs._replace(left_out=[*unreached, *pairs.left_out])
    if not pairs.scored:
        why = f"no seed scored by both {labels[0]} and {labels[1]}" + (
            f" ({'; '.join(pairs.left_out)})" if pairs.left_out else "")
        return _not_tested(claim, task, benchmark, why, *labels)
    p, test = (cs.glue_p_value(pairs.scored, metric) if benchmark == "glue"
               else cs.bleu_p_value(pairs.scored, model_dir))
    numbers = [cs.summary([pair[i] for pair in pairs.scored], metric) for i in (0, 1)]
    verdict = (NOT_TESTED if p is None else SUPPORTED if p < ALPHA and numbers[0]["mean"] > numbers[1]["mean"]
               else CONTRADICTED if p < ALPHA and numbers[0]["mean"] < numbers[1]["mean"] else NOT_SIGNIFICANT)
    entry = {
        **_head(claim, task, benchmark, verdict, labels),
        "metric": metric.name, "seeds": [m.get("seed") for m, _ in pairs.scored], "left_out": pairs.left_out,
        "guided": numbers[0], "compared": numbers[1],
        "p_value": p, "test": test if p is not None else None, "reason": None if p is not None else test,
        "note": note or None, **(extra or {}),
    }
    entry["text"] = claim_text.line(entry)
    return entry


def _schedule_vs_constant(claim, guided: Group, groups: Sequence[Group], metric: cs.Metric, model_dir: str,
                          source: str = "guided") -> Dict:
    """`guided` (`source`: a PBT row, whose schedule is its best member's lineage) against the better
    of its schedules' constant replays; a PBT schedule has no step-by-step replay (it cannot reproduce
    PBT: other members' parameters were copied in on the way)."""
    task, benchmark = _task_name(guided.family[:4]), "glue" if guided.glue else "bleu"
    constants = {mode: runs for mode in CONSTANT_MODES
                 if (runs := _replays_of(guided, groups, mode, model_dir, source))}
    schedule = _replays_of(guided, groups, "schedule", model_dir, source)
    reproduction = _reproduction(guided, schedule, _label_of(schedule, groups)) if source == "guided" else None
    if not constants:
        return _not_tested(claim, task, benchmark, f"no replays of {guided.label}'s learned schedule as constants "
                           f"(`hpo run --claims` runs them)", guided.label, extra={"reproduction": reproduction})
    summaries = {mode: {"row": _label_of(runs, groups), **cs.summary(runs, metric),
                        "selection": _selection_mean(runs, metric)} for mode, runs in constants.items()}
    best = _best_constant(summaries, metric)
    extra = {"constants": summaries, "best_constant": best, "reproduction": reproduction}
    return _compare(claim, task, benchmark, guided.records, constants[best], (guided.label, summaries[best]["row"]),
                    metric, model_dir, extra=extra)


def _selection_mean(runs: Sequence[Dict], metric: cs.Metric) -> Optional[float]:
    values = [v for v in (metric.select(r) for r in runs) if v is not None]
    return sum(values) / len(values) if values else None


def _best_constant(summaries: Dict[str, Dict], metric: cs.Metric) -> str:
    """The constant with the better dev metric (test only reports); without one, the first."""
    known = {m: s["selection"] for m, s in summaries.items() if s["selection"] is not None}
    if not known:
        return next(iter(summaries))
    pick = max if metric.higher_is_better_selection else min
    return pick(known, key=known.get)


def _reproduction(guided: Group, replays: Sequence[Dict], label: str) -> Dict:
    """Does replaying the schedule reproduce guided? Dev losses per seed, within REPRODUCTION_RTOL."""
    by_seed = {r.get("seed"): r for r in guided.records}
    seeds = []
    for replay in replays:
        losses = (cs.number(by_seed[replay.get("seed")].get("dev_loss")), cs.number(replay.get("dev_loss")))
        if None not in losses:
            seeds.append({"seed": replay.get("seed"), "guided_dev_loss": losses[0], "replay_dev_loss": losses[1],
                          "within": abs(losses[1] - losses[0]) <= REPRODUCTION_RTOL * abs(losses[0])})
    return {"row": label or None, "guided": guided.label, "seeds": seeds, "tolerance": REPRODUCTION_RTOL,
            "reproduced": all(s["within"] for s in seeds) if seeds else None}


def _head(claim, task, benchmark, verdict, labels) -> Dict:
    ident, number, title = claim
    rows = list(labels) + [None] * (2 - len(labels))
    return {"claim": ident, "number": number, "title": title, "task": task, "benchmark": benchmark,
            "verdict": verdict, "rows": {"guided": rows[0], "compared": rows[1]}}


def _not_tested(claim, task, benchmark, reason: str, *labels, extra=None) -> Dict:
    entry = {**_head(claim, task, benchmark, NOT_TESTED, labels), "reason": reason, **(extra or {})}
    entry["text"] = claim_text.line(entry)
    return entry


# ---------------------------------------------------------------- outputs

def write(entries: List[Dict], out_dir: str) -> str:
    """verdicts.json in `out_dir` (atomically) -> its path."""
    from hpo.core import io as hpo_io
    path = os.path.join(out_dir, VERDICTS_FILE)
    hpo_io.write_json(path, entries)
    return path
