#!/usr/bin/env bash
# Fixed vs guided vs optuna over three seeds on the embedded task.
set -euo pipefail
dir=${1:?usage: embedded_comparison.sh MODEL_DIR [hpo run args...]}; shift
"${HPO:-hpo}" run --strategy=fixed,guided,optuna --seeds=3: --model_dir="$dir" "$@"
