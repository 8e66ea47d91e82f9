#!/usr/bin/env bash
# The accelerator benchmark on a GPU machine as it is: no network, no package index, the
# machine's own python3 (JAX with CUDA, flax, optax, orbax, numpy, rich). The one package it
# lacks, gin-config, comes as the pure-Python wheel in bench/wheels/. Arguments go to
# `python3 -m bench.gpu` (see its --help); the figures go to bench/results-gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
site=${GPU_SITE:-build/gpu-site}  # where the wheels are installed
wheels=(bench/wheels/*.whl)
if ! "$PYTHON" -m pip install -q --no-index --no-deps --upgrade --target "$site" "${wheels[@]}" >/dev/null 2>&1
then
    site=$(IFS=:; echo "${wheels[*]}")  # no pip: pure-Python wheels import from the zip files themselves
fi
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m bench.gpu "$@"
