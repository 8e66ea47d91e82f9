"""Result files: atomic writes, local directories or object stores (gs://).

A reader never sees a half-written result file: text goes to a temporary
file that is renamed over the target. Paths with a scheme (`gs://bucket/dir`,
as a TPU VM's MODEL_DIR) go through TensorFlow's file system layer
(`tf.io.gfile`); local paths through the OS. On several hosts only the leader
(process 0) writes result files: the others compute the same results (see
hpo.core.distributed).
"""

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import time
import uuid
from typing import Any, Optional

from hpo.core import faults
from hpo.core.errors import UserError


def is_url(path: str) -> bool:
    return "://" in str(path)


def _gfile():
    import tensorflow as tf
    return tf.io.gfile


def abspath(path: str) -> str:
    """An absolute local path (~ expanded); a URL as it is."""
    return str(path) if is_url(path) else os.path.abspath(os.path.expanduser(path))


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_url(path) else os.path.exists(path)


def isfile(path: str) -> bool:
    if is_url(path):
        return _gfile().exists(path) and not _gfile().isdir(path)
    return os.path.isfile(path)


def isdir(path: str) -> bool:
    return _gfile().isdir(path) if is_url(path) else os.path.isdir(path)


def listdir(path: str) -> list:
    return _gfile().listdir(path) if is_url(path) else os.listdir(path)


def remove(path: str) -> None:
    if is_url(path):
        _gfile().remove(path)
    else:
        os.remove(path)


def rmtree(path: str) -> None:
    """Removes a directory and what it holds (gfile lists a URL's directories with a trailing /)."""
    if is_url(path):
        _gfile().rmtree(path.rstrip("/"))
    else:
        import shutil
        shutil.rmtree(path)


def copytree(source: str, target: str) -> None:
    """Copies a directory under a temporary name, then renames it to `target` (which must not
    exist): a copy stopped half-way is never taken for a whole one (its temporary name is
    removed by the next copy). On object stores through gfile, file by file."""
    partial = target.rstrip("/") + ".hpo-copy"
    if isdir(partial):
        rmtree(partial)
    if not is_url(source) and not is_url(target):
        import shutil
        shutil.copytree(source, partial)
        os.rename(partial, target)
        return
    gfile, source = _gfile(), source.rstrip("/")
    for folder, _, files in gfile.walk(source):
        below = os.path.relpath(folder.rstrip("/"), source)
        inside = partial if below == "." else os.path.join(partial, below)
        gfile.makedirs(inside)
        for name in files:
            gfile.copy(os.path.join(folder, name), os.path.join(inside, name), overwrite=True)
    gfile.rename(partial, target)


def read_text(path: str) -> str:
    if is_url(path):
        with _gfile().GFile(path, "r") as f:
            return f.read()
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def write_text(path: str, text: str, every_host: bool = False) -> None:
    """Writes `text` to `path` through a temporary file and a rename (the leader only, unless
    every_host)."""
    write_bytes(path, text.encode("utf-8"), every_host)


def write_bytes(path: str, data: bytes, every_host: bool = False, phase: str = "record") -> None:
    """Writes `data` to `path` through a temporary file and a rename. Result files are the
    leader's alone; `every_host` is for generated data, which each host caches for itself (on
    its own disk, or beside the others: the temporary names differ and the contents agree). A
    file system that refuses (full, read-only, no permission) is a UserError naming `path`;
    the old file, if any, is left as it was and no temporary file is left behind. `phase`: the
    fault point's (`hpo.core.faults`) between the write and the rename."""
    from hpo.core import distributed
    if not every_host and not distributed.is_leader():
        return
    if is_url(path):
        gfile = _gfile()
        gfile.makedirs(path.rsplit("/", 1)[0])
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with gfile.GFile(tmp, "wb") as f:
            f.write(data)
        gfile.rename(tmp, path, overwrite=True)
        return
    try:
        _write_local(path, data, None if every_host else phase)  # generated data is no result
    except OSError as e:
        raise UserError(f"cannot write {path}: {os_reason(e)}") from e


def _write_local(path: str, data: bytes, phase: Optional[str] = None) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    f, tmp = _open_temp(directory, os.path.basename(path))
    try:
        with f:
            f.write(data)
        if phase:
            faults.point(phase)  # written, not yet in place
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _open_temp(directory: str, name: str):
    """(a new binary file in `directory` for `name`'s next contents, its path): where every
    local result file is written before it is renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + name)
    return os.fdopen(fd, "wb"), tmp


def os_reason(error: OSError) -> str:
    """What the OS said, without the path it was said about ("No space left on device")."""
    return error.strerror or str(error) or type(error).__name__


def check_writable_dir(path: str, name: str = "MODEL_DIR") -> None:
    """UserError unless `path` is, or can be made, a directory whose files can be written: a
    small probe file is written there, as results are (write-then-rename), and removed. Runs
    before anything trains, so that a bad MODEL_DIR costs nothing. Object stores are not probed."""
    from hpo.core import distributed
    if is_url(path) or not distributed.is_leader():
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{name} {path} is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"{name} {path} cannot be created: {os_reason(e)}") from e
    probe = os.path.join(path, f".hpo-write-test-{uuid.uuid4().hex}")
    try:
        _write_local(probe, b"hpo\n")
        os.remove(probe)
    except OSError as e:
        raise UserError(f"{name} {path} is not writable: {os_reason(e)}") from e


def write_json(path: str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=jsonable) + "\n")


def read_json(path: str, default: Any = None) -> Any:
    if not exists(path):
        return default
    return json.loads(read_text(path))


def jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):  # numpy and jax scalars and arrays
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


@contextlib.contextmanager
def locked(path: str):
    """An exclusive lock on `path`.lock while the block runs (several processes
    may add records to one file, or create one Optuna database, at once).

    Object stores have no locks: there, one job writes a MODEL_DIR (several
    jobs share an Optuna study through a database server instead).
    """
    if is_url(path):
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


RUN_LOCK = "run.lock"


@contextlib.contextmanager
def training(run_dir: str, leader: bool = True):
    """This process alone trains `run_dir` while the block runs. Another `hpo run` that
    reaches the same run (two runs on one MODEL_DIR by mistake) stops at once with one
    line naming the holder: never two trainings, or interleaved checkpoints, in one run
    directory. The OS drops the lock when its holder dies, even by kill -9. On several
    hosts the leader holds it for all (they train the run together); object stores have
    no locks (there, one job writes a MODEL_DIR)."""
    if is_url(run_dir) or not leader:
        yield
        return
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, RUN_LOCK), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise UserError(f"{run_dir} is being trained by another hpo run ({holder}): let it finish, "
                            f"then run again to read its result") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
