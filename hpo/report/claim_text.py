"""The verdicts as text: one line each (in the verdict's "text"), a Markdown list, a LaTeX list."""

from typing import Dict, Optional, Sequence

from hpo.report.claim_stats import seed_list


def line(v: Dict) -> str:
    """One line: the claim, the rows, the verdict, then its numbers or the reason it was not tested."""
    where = f" ({v['task']})" if v.get("task") else ""
    head = f"{v['number']}. {v['title']}{where}: {v['verdict']}"
    rows = v["rows"]
    if "guided" not in v:  # nothing to compare
        return f"{head}: {v['reason']}." + _reproduction_text(v.get("reproduction"), tested=False)
    g, c, fmt = v["guided"], v["compared"], "{:.2f}"
    parts = [f"{rows['guided']} {_mean_sd(g, fmt)} vs {rows['compared']} {_mean_sd(c, fmt)} {v['metric']} "
             f"(seed{'s' if len(v['seeds']) > 1 else ''} {seed_list(v['seeds'])})"]
    parts.append(f"p = {v['p_value']:.3g} ({v['test']})" if v["p_value"] is not None else f"no p-value: {v['reason']}")
    parts.append(_compute_text(g, c))
    if v.get("constants"):
        parts.append(_constants_text(v["constants"], "BLEU" if v["benchmark"] == "bleu" else "loss", fmt))
    if v.get("left_out"):
        parts.append("left out: " + "; ".join(v["left_out"]))
    if v.get("note"):
        parts.append(v["note"])
    return f"{head}. " + "; ".join(parts) + "." + _reproduction_text(v.get("reproduction"))


def _mean_sd(summary: Dict, fmt: str) -> str:
    mean, sd = summary.get("mean"), summary.get("sd")
    return "–" if mean is None else fmt.format(mean) + ("" if sd is None else " ± " + fmt.format(sd))


def _constants_text(constants: Dict[str, Dict], dev: str, fmt: str) -> str:
    """Each constant's score and dev metric: the better dev metric picked the one compared."""
    shown = [f"{c['row']} {_mean_sd(c, fmt)} (dev {dev} {_number(c['selection'], '{:.2f}')})"
             for c in constants.values()]
    return f"constants, the best by dev {dev} compared: " + ", ".join(shown)


def _number(value, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def _compute_text(g: Dict, c: Dict) -> str:
    a, b = g.get("compute_steps"), c.get("compute_steps")
    if a is None or b is None:
        return "compute not recorded"
    ratio = f" (×{a / b:.2f})" if b else ""
    return f"compute {a:.0f} vs {b:.0f} train-step equivalents per seed{ratio}"


def _reproduction_text(rep: Optional[Dict], tested: bool = True) -> str:
    if not rep or rep["reproduced"] is None:
        return " Reproduction not checked: no replay of the schedule." if rep and tested else ""
    seeds = seed_list(s["seed"] for s in rep["seeds"])
    if rep["reproduced"]:
        return (f" {rep['row']} reproduces {rep['guided']} (dev loss within {rep['tolerance']:.1%} on seed"
                f"{'s' if len(rep['seeds']) > 1 else ''} {seeds}).")
    off = "; ".join(f"seed {s['seed']}: {s['replay_dev_loss']:.4f} vs {s['guided_dev_loss']:.4f}"
                    for s in rep["seeds"] if not s["within"])
    return f" {rep['row']} does NOT reproduce {rep['guided']} (dev loss {off}; tolerance {rep['tolerance']:.1%})."


def markdown(entries: Sequence[Dict]) -> str:
    """The verdicts below the tables: a titled list."""
    return "\n".join(["### Claims", "", *(f"- {v['text']}" for v in entries)]) + "\n"


def latex(entries: Sequence[Dict], escape) -> str:
    """An itemize list (no packages needed); `escape` is the table's cell escaping."""
    items = [r"\item " + escape(v["text"]) for v in entries]
    return "\n".join(["% Claims", r"\begin{itemize}", *items, r"\end{itemize}"]) + "\n"
