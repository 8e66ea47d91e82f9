"""Shared test set-up: a private data cache and quiet TensorFlow."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory):
    """Generated corpora and vocabularies go to a temporary cache shared by the session."""
    path = str(tmp_path_factory.mktemp("hpo-data"))
    os.environ["HPO_DATA_DIR"] = path
    yield path


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
