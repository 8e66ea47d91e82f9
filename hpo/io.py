"""Atomic file writes: a reader never sees a half-written result file."""

import contextlib
import fcntl
import json
import os
import tempfile
from typing import Any


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: str, default: Any = None) -> Any:
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):  # numpy and jax scalars and arrays
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


@contextlib.contextmanager
def locked(path: str):
    """An exclusive lock on `path`.lock while the block runs (several processes
    may add records to one file, or create one Optuna database, at once)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
