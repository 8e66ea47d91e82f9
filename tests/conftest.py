"""Shared test set-up: a private data cache and quiet TensorFlow."""

import errno
import glob
import os
import shutil
import subprocess
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory):
    """Generated corpora and vocabularies go to a temporary cache shared by the session."""
    path = str(tmp_path_factory.mktemp("hpo-data"))
    os.environ["HPO_DATA_DIR"] = path
    yield path


# The longest test files first (measured: `make test`'s durations), so that the two workers do
# not end waiting on one of them; the Makefile tells xdist to keep this order
# (--no-loadscope-reorder). Within a file the order is unchanged.
LONGEST_FIRST = ("test_t5x.py", "test_guided.py", "test_multihost.py", "test_t5x_forward.py", "test_horizon.py",
                 "test_t5x_hypergradients.py",
                 "test_forward.py",
                 "test_kill.py", "test_pbt.py", "test_t5x_glue.py", "test_bench.py", "test_glue_finetune.py", "test_cli.py",
                 "test_one_run_per_dir.py", "test_tfds_prepared.py", "test_full_disk.py",
                 "test_optuna.py", "test_groups.py", "test_paper_config.py", "test_trainer.py", "test_divergence.py",
                 "test_quiet.py", "test_decoding.py", "test_claims.py", "test_probe.py", "test_gpu_bench.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def tiny_experiment(tmp_path):
    """An Experiment from configs/test.gin in a fresh model dir."""
    from hpo import config
    from hpo.experiment import Experiment

    def make(*bindings, gin_files=("test.gin",)):
        config.parse(list(gin_files), [f"MODEL_DIR = '{tmp_path}'", *bindings])
        return Experiment()

    return make


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """Runs in the suite compile the same tiny computations again and again: cache them."""
    import jax
    path = str(tmp_path_factory.mktemp("jax-cache"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    # `hpo run` subprocesses share it (JAX reads its options from the environment too).
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


@pytest.fixture
def t5x_gin():
    """T5X's gin files register T5X's configurables (dynamic registration); a later builtin
    parse in this process would find `DatasetConfig` and `T5Config` ambiguous. Forget them."""
    import gin.config
    registry, inverse = gin.config._REGISTRY, gin.config._INVERSE_REGISTRY
    before = {selector for selector, _ in registry.items()}
    yield
    added = [s for s, _ in registry.items() if s not in before and not s.startswith(("hpo.", "hpo_t5x."))]
    for selector in added:
        info = registry.pop(selector)
        inverse.pop(info.wrapped, None)
    gin.clear_config()


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


@pytest.fixture(scope="session")
def postgres_url(postgres_server):
    return postgres_server.url


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL server (Debian's PostgreSQL 15, found by `postgres_bindir`) on a Unix
    socket in a temp dir, as the `postgres` user when the tests run as root (the server refuses
    root). It also has PASSWORD_USER, who must give PASSWORD, with a database of that name."""
    bindir = postgres_bindir()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = tempfile.mkdtemp(prefix="hpo-pg-")
    data, sockets = os.path.join(root, "data"), os.path.join(root, "sockets")
    os.makedirs(sockets)
    if as_postgres:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")

    def run(program, *args):
        out = subprocess.run([*as_postgres, os.path.join(bindir, program), *args], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, f"{program}: {out.stdout[-1500:]} {out.stderr[-1500:]}"

    run("initdb", "-D", data, "--auth=trust", "-U", "postgres")
    hba = os.path.join(data, "pg_hba.conf")
    with open(hba) as f:
        rules = f.read()
    with open(hba, "w") as f:  # the first matching line decides
        f.write(f"local all {PASSWORD_USER} scram-sha-256\n{rules}")
    start = ("pg_ctl", "-D", data, "-w", "-l", os.path.join(root, "server.log"), "-o",
             f"-k {sockets} -c listen_addresses='' -c max_connections=50", "start")
    run(*start)
    try:
        run("createdb", "-h", sockets, "-U", "postgres", "hpo")
        run("psql", "-h", sockets, "-U", "postgres", "-d", "hpo", "-c",
            f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'")
        run("createdb", "-h", sockets, "-U", "postgres", "-O", PASSWORD_USER, PASSWORD_USER)  # its own
        yield PostgresServer(f"postgresql://postgres@/hpo?host={sockets}", run, start, data)
    finally:
        run("pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


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
    from hpo import io as hpo_io
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
