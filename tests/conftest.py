"""Shared test set-up: a private data cache and quiet TensorFlow, the test tiers and file order,
and the fixtures. Helpers that test files import live in helpers.py."""

import os
import shutil
import subprocess
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from helpers import PASSWORD, PASSWORD_USER, PostgresServer, postgres_bindir  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory):
    """Generated corpora and vocabularies go to a temporary cache shared by the session."""
    path = str(tmp_path_factory.mktemp("hpo-data"))
    os.environ["HPO_DATA_DIR"] = path
    yield path


# Two tiers (markers registered in pyproject.toml). A test that takes more than about 2 s here,
# its fixtures included (a module fixture that trains a model counts for each test that uses
# it), is marked `integration` in its file: `pytestmark` for a whole file, a decorator for one
# test. Every other test is `unit`, added below, so that no test is in neither tier or in both;
# `make test-unit` runs `-m unit` in about a minute, `make test` runs both.
#
# The longest test files first (measured: `make test`'s durations), so that the two workers do
# not end waiting on one of them; the Makefile tells xdist to keep this order
# (--no-loadscope-reorder). Within a file the order is unchanged.
LONGEST_FIRST = ("test_t5x.py", "test_guided.py", "test_multihost.py", "test_t5x_forward.py", "test_horizon.py",
                 "test_t5x_hypergradients.py",
                 "test_forward.py",
                 "test_kill.py", "test_pbt.py", "test_pbt_workers.py", "test_t5x_glue.py", "test_docs.py", "test_bench.py", "test_glue_finetune.py", "test_cli.py",
                 "test_one_run_per_dir.py", "test_tfds_prepared.py", "test_full_disk.py",
                 "test_optuna.py", "test_groups.py", "test_paper_config.py", "test_trainer.py", "test_divergence.py",
                 "test_quiet.py", "test_decoding.py", "test_claims.py", "test_probe.py", "test_gpu_bench.py")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these markers
def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.unit)
        elif any(mark.name == "unit" for mark in item.iter_markers()):
            raise pytest.UsageError(f"{item.nodeid} is marked both unit and integration")
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def tiny_experiment(tmp_path):
    """An Experiment from configs/test.gin in a fresh model dir."""
    from hpo.cli import gin_config as config
    from hpo.engine.experiment import Experiment

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
    # Through gin's private registry: gin-config has no public way to unregister or scope a
    # configurable (clear_config keeps the registry, interactive mode only allows registering
    # the same name again, which does not make a short name unambiguous).
    import gin.config
    registry, inverse = gin.config._REGISTRY, gin.config._INVERSE_REGISTRY
    before = {selector for selector, _ in registry.items()}
    yield
    added = [s for s, _ in registry.items() if s not in before and not s.startswith(("hpo.", "hpo_t5x."))]
    for selector in added:
        info = registry.pop(selector)
        inverse.pop(info.wrapped, None)
    gin.clear_config()


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
