"""Opening an Optuna study's storage from any SQLAlchemy URL, with one line for each way
that can fail: a missing driver, an unknown dialect, no server, wrong credentials, no
such database. Every URL goes through here, so no kind of database escapes as a traceback."""

import re
import time

import sqlalchemy
from optuna.storages import RDBStorage

from hpo.errors import UserError

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


def open_storage(url: str, **kwargs) -> RDBStorage:
    """An RDBStorage; workers on other hosts that open a new database at once race to
    create its tables (no file lock reaches them), and the losers retry."""
    for attempt in range(5):
        try:
            return RDBStorage(url, **kwargs)
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
