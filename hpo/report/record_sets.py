"""The result records of one or several model dirs, as the table and the plots read them."""

import os
from typing import Dict, List, Optional, Sequence, Union

from hpo.core import io as hpo_io
from hpo.core.errors import UserError
from hpo.flow import records as hpo_records

ModelDirs = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]

# load_records tags each record with its model dir: run_dir, hypotheses and
# schedule_file are relative to it, and two dirs may hold the same run key.
MODEL_DIR_FIELD = "_model_dir"
GLUE = "glue"


def as_list(model_dirs: ModelDirs) -> List[str]:
    if isinstance(model_dirs, (str, os.PathLike)):
        return [os.fspath(model_dirs)]
    return [os.fspath(d) for d in model_dirs]


def load_records(model_dirs: ModelDirs) -> List[Dict]:
    """Every record of the model dirs, in the order given, tagged with its dir. Missing input is a UserError."""
    dirs, out = as_list(model_dirs), []
    for model_dir in dirs:
        out.extend({**r, MODEL_DIR_FIELD: hpo_io.abspath(model_dir)} for r in _read_comparison(model_dir))
    if not out:
        raise UserError(f"no result records in {', '.join(dirs)}")
    return out


def _read_comparison(model_dir: str) -> List[Dict]:
    path = os.path.join(model_dir, hpo_records.COMPARISON_FILE)
    if not hpo_io.isdir(model_dir):
        raise UserError(f"no such model dir: {model_dir}")
    if not hpo_io.isfile(path):
        raise UserError(f"no {hpo_records.COMPARISON_FILE} in {model_dir} (nothing has run there)")
    try:
        loaded = hpo_io.read_json(path)
    except ValueError as e:  # JSON or UTF-8 decoding
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(loaded, list) or not all(isinstance(r, dict) for r in loaded):
        raise UserError(f"{path}: expected a list of result records")
    return loaded


def dedupe(records: Sequence[Dict]) -> List[Dict]:
    """The last record of each run of each model dir: a rerun replaces its earlier record, never adds to it."""
    latest = {}
    for record in records:
        key = (record.get(MODEL_DIR_FIELD), *hpo_records.record_key(record))
        latest.pop(key, None)  # the rerun takes the later position
        latest[key] = record
    return list(latest.values())


def resolve(record: Dict, model_dir: str, rel: Optional[str]) -> Optional[str]:
    """A path stored relative to the record's model dir, made usable from here."""
    if not rel:
        return None
    return os.path.join(record.get(MODEL_DIR_FIELD) or model_dir, rel)


def run_path(record: Dict) -> str:
    """Where the run is: its model dir and run dir (as much of that as the record says)."""
    parts = [record.get(MODEL_DIR_FIELD), record.get("run_dir")]
    return os.path.join(*[str(p) for p in parts if p]) if any(parts) else "(no run_dir)"


def backend(record: Dict) -> str:
    return str(record.get("backend") or "builtin")  # records from before backends were built-in runs


def is_glue(record: Dict) -> bool:
    return record.get("benchmark") == GLUE
