#!/usr/bin/env bash
# The paper's setting: WMT19 lt-en (TFDS, prepared beforehand with
# `tfds build wmt19_translate/lt-en`), T5 v1.1 small, bfloat16, on a TPU VM or GPU.
# Run on each host of a TPU VM; JAX sees all local chips and the train step
# is data-parallel over them. Optuna workers on several machines can share a
# PostgreSQL study: pass --gin.OptunaSearch.storage="'postgresql://user@host/db'".
set -euo pipefail
dir=${1:?usage: tpu_wmt19_lten.sh MODEL_DIR [hpo run args...]}; shift
"${HPO:-hpo}" run --strategy=fixed,guided,optuna --seeds=3: --model_dir="$dir" \
  --gin_file=tasks/wmt19_lten.gin --gin_file=models/t5_1_1_small.gin --gin_file=bf16.gin \
  --gin.Guided.tune="['learning_rate', 'beta1', 'decay_rate', 'label_smoothing']" \
  --gin.Guided.meta_learning_rate=3e-5 \
  --gin.OptunaSearch.n_trials=16 --gin.OptunaSearch.pruner="'median'" "$@"
