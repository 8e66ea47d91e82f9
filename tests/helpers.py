"""Helpers that several test files import (`from helpers import ...`): a stand-in batch stream
that dies, a full disk, the private PostgreSQL server's programs and password user. Fixtures
stay in conftest.py, which imports what it needs from here."""

import errno
import glob
import os
import shutil
import subprocess

import pytest


def postgres_bindir() -> str:
    """Where the PostgreSQL server's programs are, as users' machines have them: `pg_config
    --bindir`, Debian's /usr/lib/postgresql/<version>/bin (newest first), or the PATH."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates += [out.stdout.strip()] if out.returncode == 0 else []
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(debian, key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0,
                         reverse=True)
    candidates += [os.path.dirname(shutil.which("initdb"))] if shutil.which("initdb") else []
    for bindir in candidates:
        if all(os.access(os.path.join(bindir, p), os.X_OK) for p in ("initdb", "pg_ctl", "postgres")):
            return bindir
    pytest.fail("no PostgreSQL server found (no initdb, pg_ctl and postgres in `pg_config --bindir`, "
                "/usr/lib/postgresql/*/bin or the PATH): install it, e.g. apt install postgresql", pytrace=False)


# A user the server asks for a password (the others are trusted on its private socket).
PASSWORD_USER, PASSWORD = "hpo_pw", "right-password"


class PostgresServer:
    """The private server: its `url`, and `stop()` / `start()` (a restart, as an operator's)."""

    def __init__(self, url, run, start_args, data):
        self.url, self._run, self._start_args, self._data = url, run, start_args, data

    def stop(self):
        self._run("pg_ctl", "-D", self._data, "-m", "fast", "-w", "stop")

    def start(self):
        self._run(*self._start_args)


class DiesAt:
    """A stream of batches (`pipeline.Batches`) whose process dies when it is asked for batch
    number `at`: KeyboardInterrupt, as from a kill, after the checkpoints written before."""

    def __init__(self, batches, at: int):
        self._batches, self._at, self._served = batches, at, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self._served == self._at:
            raise KeyboardInterrupt
        self._served += 1
        return next(self._batches)

    def save(self, path):
        self._batches.save(path)

    def restore(self, path):
        self._batches.restore(path)


def fill_the_disk(monkeypatch):
    """ENOSPC once part of a file is written, in the write-then-rename helper every result goes through."""
    from hpo.core import io as hpo_io
    real = hpo_io._open_temp

    class FullDisk:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            self._f.write(data[: len(data) // 2])
            self._f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def open_temp(directory, name):
        f, tmp = real(directory, name)
        return FullDisk(f), tmp

    monkeypatch.setattr(hpo_io, "_open_temp", open_temp)
