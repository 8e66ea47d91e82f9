"""`hpo run --claims`: the fixed replays of each guided run's learned schedule that claim 3 compares.

For each seed, the guided run's `hparams.csv` is replayed by the fixed strategy
three ways (Fixed.replay, Fixed.replay_mode): step by step (it must reproduce
guided), and as two constants, its mean and its final value. A PBT run's schedule
(its best member's lineage) is replayed as its two constants (`fixed-replay-pbt-<mode>`). They are ordinary
fixed runs (`MODEL_DIR/fixed-replay-<mode>/seed<N>`, the table's `fixed (replay
<mode>)` rows): a rerun resumes or skips them like any run.
"""

import os
from typing import Dict, List, Optional, Sequence

from hpo.core import distributed
from hpo.core.errors import UserError
from hpo.flow import records

MODES = ("schedule", "mean", "final")
GUIDED, PBT = "guided", "pbt"
# A PBT schedule is its best member's lineage (other members' parameters copied in on the way):
# replayed step by step it cannot reproduce PBT, so only its constants are run.
PBT_MODES = ("mean", "final")


def guided_record(experiment, seed: int, strategy: str = GUIDED) -> Optional[Dict]:
    """The guided (or PBT) run of `seed` recorded in MODEL_DIR for this experiment's task and
    budget, if any. The leader reads it, so that every host replays the same runs."""
    found = None
    if distributed.is_leader():
        run_dir = os.path.relpath(experiment.run_dir(strategy, seed), experiment.model_dir)
        found = records.find(experiment.model_dir, task=experiment.task, strategy=strategy, seed=seed, run_dir=run_dir)
        found = found if found is not None and found.get("train_steps") == experiment.train_steps else None
    return distributed.broadcast(found)


def check(experiment, seeds: Sequence[int], strategies: Sequence[str]) -> None:
    """Before anything trains: --claims needs a guided (or PBT) run of every seed, this command's or
    recorded."""
    if GUIDED in strategies or PBT in strategies:
        return
    missing = [s for s in seeds if guided_record(experiment, s) is None and guided_record(experiment, s, PBT) is None]
    if missing:
        raise UserError(f"--claims replays the guided runs' schedules: no guided run of seed "
                        f"{', '.join(map(str, missing))} in {experiment.model_dir}; add guided to --strategy")


def run(experiment, seed: int, guided: Optional[Dict] = None, strategy: str = GUIDED) -> List[Dict]:
    """The replays of `seed`'s guided (or PBT) run (`guided`, or the one recorded); none for a
    diverged run."""
    from hpo.strategies.fixed import Fixed
    guided = guided or guided_record(experiment, seed, strategy)
    if guided is None or guided.get("diverged") or not guided.get("schedule_file"):
        return []
    schedule = os.path.join(experiment.model_dir, guided["schedule_file"])
    # hparams={}: the configured values, as guided used for what it did not tune (not Fixed.hparams).
    return [Fixed(hparams={}, replay=schedule, replay_mode=mode, replay_of=strategy).run(experiment, seed)
            for mode in (MODES if strategy == GUIDED else PBT_MODES)]


def label(record: Dict) -> str:
    """How a replay's line names it: as its table row does."""
    of = record["replay"].get("of")
    return f"{record['strategy']} (replay {of + ' ' if of else ''}{record['replay']['mode']})"
