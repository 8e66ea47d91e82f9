"""Where a PBT population's state lives: user attributes of an Optuna study, so that workers on
several processes or hosts share one population as they share an Optuna study.

The state is split by writer, so no two processes ever write one key:
  - `member_<i>`: member i's values, steps, scores and lineage, written by whoever holds
    member i's lock (it trains the member's segment);
  - `population`: the round, the pending exploit plan, the exploits and the anytime curve, the
    settings (written by the holder of the `round` lock: it plans, copies and ends rounds);
  - `record`: the population's row, once its best member is scored.
`population` is written last when a population is created, so a state without it is no state.

The locks die with their holder, even by kill -9: on SQLite a `flock` on a file beside the
database (the OS drops it), on PostgreSQL a session-level advisory lock (the server drops it
with the connection). Other databases have no such lock here: they are refused in one line.
"""

import fcntl
import hashlib
import json
import os
from typing import Dict, Optional

import optuna
import sqlalchemy

from hpo.core import faults, io as hpo_io
from hpo.core.errors import UserError
from hpo.strategies.storage import creation_lock, open_storage, shown


class PopulationStore:
    def __init__(self, url: str, study_name: str, model_dir: str, reconnect_seconds: float):
        dialect = sqlalchemy.engine.make_url(url).get_backend_name()
        if dialect not in ("sqlite", "postgresql"):
            raise UserError(f"pbt: a population's workers take locks on SQLite or PostgreSQL; "
                            f"{shown(url)} is {dialect}: give Pbt.storage (or OptunaSearch.storage) of either")
        database = sqlalchemy.engine.make_url(url).database if dialect == "sqlite" else None
        if dialect == "sqlite" and database in (None, "", ":memory:"):
            raise UserError(f"pbt: {shown(url)} is a database in memory, which no other process or rerun "
                            f"can open: give a file (sqlite:///PATH)")
        with hpo_io.locked(creation_lock(url, model_dir)):
            self._storage = open_storage(url, reconnect_seconds=reconnect_seconds)
            self.study = optuna.create_study(study_name=study_name, storage=self._storage, load_if_exists=True)
        self.name, self.where = study_name, f"the study {study_name} of {shown(url)}"
        self._lock_dir = f"{os.path.abspath(database)}-locks" if database else None
        self._held: Dict[str, object] = {}

    def lives_in(self, model_dir: str) -> bool:
        """An SQLite file inside MODEL_DIR (a MODEL_DIR moved elsewhere takes its population along)."""
        return self._lock_dir is not None and self._lock_dir.startswith(os.path.join(os.path.abspath(model_dir), ""))

    # --- the state ------------------------------------------------------------------------

    def read(self) -> Optional[Dict]:
        """{'settings', 'round', 'pending', 'exploits', 'anytime', 'members', 'record'}, or None."""
        attrs = self.study.user_attrs
        if "population" not in attrs:
            return None
        state = dict(attrs["population"])
        state["members"] = [attrs[f"member_{i}"] for i in range(len(state.pop("member_keys")))]
        state["record"] = attrs.get("record")
        return state

    def create(self, state: Dict) -> None:
        """A new population: its members, then the population (with no stop point: a worker
        stopped here leaves no state, and the next makes the same one again)."""
        for member in state["members"]:
            self._write(f"member_{member['member']}", member, stop_point=False)
        self.write_population(state, stop_point=False)

    def write_member(self, member: Dict) -> None:
        self._write(f"member_{member['member']}", member)

    def write_population(self, state: Dict, stop_point: bool = True) -> None:
        """The population's part of `state` (not its members)."""
        part = {k: v for k, v in state.items() if k not in ("members", "record")}
        self._write("population", {**part, "member_keys": [f"member_{m['member']}" for m in state["members"]]},
                    stop_point)

    def write_record(self, record: Dict) -> None:
        self._write("record", record)

    def _write(self, key: str, value, stop_point: bool = True) -> None:
        value = json.loads(json.dumps(value, default=hpo_io.jsonable))  # numpy scalars too
        if stop_point:
            faults.point("record")  # the new state made, not yet stored
        self.study.set_user_attr(key, value)

    # --- the locks ------------------------------------------------------------------------

    def try_lock(self, name: str) -> bool:
        """Takes `name` (a member, or the round) if no process holds it; False if one does."""
        if name in self._held:
            return True
        if self._lock_dir is not None:
            os.makedirs(self._lock_dir, exist_ok=True)
            handle = open(os.path.join(self._lock_dir, f"{self.name}.{name}.lock"), "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
        else:
            handle = self._storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            key = _advisory_key(f"{self.name}/{name}")
            if not handle.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                handle.close()
                return False
        self._held[name] = handle
        return True

    def unlock(self, name: str) -> None:
        handle = self._held.pop(name, None)
        if handle is None:
            return
        if self._lock_dir is None:
            try:
                handle.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _advisory_key(f"{self.name}/{name}")})
            finally:
                handle.close()
        else:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def unlock_all(self) -> None:
        for name in list(self._held):
            self.unlock(name)


def _advisory_key(name: str) -> int:
    """A PostgreSQL advisory lock's bigint key for a name."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
