"""Result records and MODEL_DIR/comparison.json, the list every run adds itself to."""

import os
from typing import Dict, List

from hpo import io as hpo_io

COMPARISON_FILE = "comparison.json"
# A record is identified by these fields: re-running a run replaces its row.
KEY_FIELDS = ("task", "strategy", "seed", "run_dir")


def record_key(record: Dict) -> tuple:
    return tuple(record.get(k) for k in KEY_FIELDS)


def load(model_dir: str) -> List[Dict]:
    return hpo_io.read_json(os.path.join(model_dir, COMPARISON_FILE), default=[])


def add(model_dir: str, record: Dict) -> None:
    """Adds `record` to MODEL_DIR/comparison.json (atomically), replacing the same run's row."""
    path = os.path.join(model_dir, COMPARISON_FILE)
    with hpo_io.locked(path):
        records = [r for r in hpo_io.read_json(path, default=[]) if record_key(r) != record_key(record)]
        records.append(record)
        hpo_io.write_json(path, records)


def find(model_dir: str, **fields) -> Dict:
    """The record whose fields equal `fields`, or None."""
    for record in load(model_dir):
        if all(record.get(k) == v for k, v in fields.items()):
            return record
    return None
