"""Opening an Optuna study's storage from any SQLAlchemy URL, with one line for each way
that can fail: a missing driver, an unknown dialect, no server, wrong credentials, no
such database. Every URL goes through here, so no kind of database escapes as a traceback.

The storage outlives a database server's restart: a call that finds the server gone waits
and reconnects with a bounded back-off (one line says so), for up to `reconnect_seconds`;
then the worker stops with one line and a rerun continues the study."""

import functools
import os
import re
import sys
import threading
import time
import types

import sqlalchemy
from optuna.storages import RDBStorage

from hpo.core.errors import UserError

# The pip package of a DB-API module, where the two names differ (else the module's name).
DRIVER_PACKAGES = {"MySQLdb": "mysqlclient", "pymysql": "PyMySQL", "mysql": "mysql-connector-python",
                   "psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "cx_Oracle": "cx-Oracle",
                   "pyodbc": "pyodbc", "oracledb": "oracledb", "pg8000": "pg8000", "asyncpg": "asyncpg",
                   "pymssql": "pymssql", "mariadb": "mariadb"}

# What a driver's error says, in the words of PostgreSQL, MySQL, SQL Server and Oracle.
_NO_DATABASE = re.compile(r"database .* does not exist|Unknown database|Cannot open database|ORA-12514")
_REFUSED_USER = re.compile(r"password authentication failed|role .* does not exist|Access denied|"
                           r"Login failed|ORA-01017|no password supplied", re.I)
_NO_SERVER = re.compile(r"Connection refused|No such file or directory|could not connect|Can't connect|"
                        r"could not translate host name|Name or service not known|timeout expired|"
                        r"Is the server running", re.I)


class ReconnectingStorage(RDBStorage):
    """Optuna's RDBStorage whose calls wait out a lost server (see the module's docstring).
    A call retried after its connection failed is one whose transaction was rolled back (or
    never began: connections are checked before use), so nothing is written twice."""

    def __init__(self, url: str, reconnect_seconds: float = 120.0, **kwargs):
        self.reconnect_seconds = reconnect_seconds
        self._outage_lock, self._outage = threading.Lock(), None  # since when the server is gone
        engine_kwargs = {"pool_pre_ping": True, **kwargs.pop("engine_kwargs", {})}  # a restart's dead connections
        super().__init__(url, engine_kwargs=engine_kwargs, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        del state["_outage_lock"]
        return state

    def __setstate__(self, state):
        self._outage_lock = threading.Lock()
        super().__setstate__(state)


def connection_lost(error: BaseException):
    """The lost or refused connection behind `error` (Optuna wraps SQLAlchemy's), or None."""
    for _ in range(5):
        if error is None:
            return None
        if isinstance(error, sqlalchemy.exc.OperationalError) or getattr(error, "connection_invalidated", False):
            return error
        error = error.__cause__ or error.__context__
    return None


def _reconnecting(method, skip_missed: bool = False):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        wait = 0.5
        while True:
            try:
                result = method(self, *args, **kwargs)
            except Exception as e:  # noqa: BLE001
                lost = connection_lost(e)
                if lost is None:
                    raise
                if skip_missed:
                    return None  # a missed heartbeat waits for the next
                _note_outage(self, lost)
                time.sleep(wait)
                wait = min(2 * wait, 5.0)
                continue
            with self._outage_lock:
                if self._outage is not None:
                    print(f"optuna: the storage is back after {time.time() - self._outage:.0f} s",
                          file=sys.stderr, flush=True)
                    self._outage = None
            return result
    return call


def _note_outage(storage: ReconnectingStorage, error: Exception) -> None:
    """One line when the server goes; UserError once it has been gone for reconnect_seconds."""
    with storage._outage_lock:
        now = time.time()
        if storage._outage is None:
            storage._outage = now
            print(f"optuna: lost the storage {shown(storage.url)} ({reason(storage.url, error)}); "
                  f"reconnecting for up to {storage.reconnect_seconds:g} s", file=sys.stderr, flush=True)
        elif now - storage._outage > storage.reconnect_seconds:
            raise UserError(f"optuna: the storage {shown(storage.url)} has been unreachable for "
                            f"{storage.reconnect_seconds:g} s ({reason(storage.url, error)}); run the same "
                            f"command again once it is back: the study continues") from error


for _name, _method in list(vars(RDBStorage).items()):
    if isinstance(_method, types.FunctionType) and not _name.startswith("_") and _name != "remove_session":
        setattr(ReconnectingStorage, _name, _reconnecting(_method, skip_missed=_name == "record_heartbeat"))


def first_heartbeat(storage, trial_id: int) -> None:
    """A trial's heartbeat, written and not skipped when missed (waiting out a lost server as
    other calls do): Optuna never fails a RUNNING trial that has none, so a worker killed
    before its heartbeat thread's first write landed (a SQLite file locked by other workers,
    a lost server) left its trial RUNNING, and the workers waiting for it, for ever."""
    storage = getattr(storage, "_backend", storage)  # under Optuna's cache of an RDBStorage
    _reconnecting(RDBStorage.record_heartbeat)(storage, trial_id)


def open_storage(url: str, **kwargs) -> RDBStorage:
    """An RDBStorage; workers on other hosts that open a new database at once race to
    create its tables (no file lock reaches them), and the losers retry."""
    for attempt in range(5):
        try:
            return ReconnectingStorage(url, **kwargs)
        except ImportError as e:  # the dialect's DB-API module (Optuna wraps it)
            module = getattr(e.__cause__, "name", None) or "its driver"
            package = DRIVER_PACKAGES.get(module.split(".")[0], module)
            raise UserError(f"optuna: cannot open the storage {shown(url)}: its driver is not installed "
                            f"(no module '{module}'); pip install {package}") from e
        except (sqlalchemy.exc.SQLAlchemyError, ValueError) as e:
            racing = "already exists" in str(e) or "UNIQUE constraint" in str(e)
            if not racing or attempt == 4:
                raise UserError(f"optuna: cannot open the storage {shown(url)}: {reason(url, e)}") from e
            time.sleep(0.5 + attempt)


def creation_lock(url: str, model_dir: str) -> str:
    """What workers of this host lock while they open a storage and create a study in it:
    together on a new SQLite file they would race to create its tables."""
    return url[len("sqlite:///"):] if url.startswith("sqlite:///") else os.path.join(model_dir, "optuna")


def shown(url: str) -> str:
    """The URL without its password."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def reason(url: str, error: Exception) -> str:
    """What went wrong, in one line: what the user can act on first, then the driver's words."""
    said = " ".join(str(getattr(error, "orig", None) or error).split())
    if isinstance(error, sqlalchemy.exc.NoSuchModuleError):
        return f"SQLAlchemy has no dialect '{sqlalchemy.engine.make_url(url).drivername}' ({said})"
    try:
        parts = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return said
    if _NO_DATABASE.search(said):
        return f"the server has no database '{parts.database}' ({said})"
    if _REFUSED_USER.search(said):
        return f"the server refused user '{parts.username}': wrong user name or password ({said})"
    if _NO_SERVER.search(said):
        where = parts.query.get("host") or f"{parts.host or 'localhost'}:{parts.port or 'the default port'}"
        return f"no database server answers at {where} ({said})"
    return said
