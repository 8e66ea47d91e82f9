#!/usr/bin/env bash
# Fixed runs over learning-rate multipliers (on the base schedule) on the embedded task.
set -euo pipefail
dir=${1:?usage: lr_grid.sh MODEL_DIR [hpo run args...]}; shift
hpo=${HPO:-hpo}
for m in 0.3 1.0 3.0 10.0; do
  "$hpo" run --strategy=fixed --model_dir="$dir/lr$m" --gin.Fixed.hparams="{'learning_rate': $m}" "$@"
done
