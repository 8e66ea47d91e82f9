#!/usr/bin/env bash
# hpo on a Cloud TPU VM slice: create the slice (or reuse it), install this checkout and
# T5X on every worker, then run `hpo run --multihost` on all workers at once. JAX's
# distributed runtime is auto-detected there; MODEL_DIR is on gs:// (every worker reads it,
# the leader writes the results) and the Optuna study lives in a PostgreSQL database that
# every worker reaches.
#
#   experiments/tpu_vm.sh --tpu NAME --zone ZONE --model_dir gs://BUCKET/DIR \
#       [--storage postgresql://USER:PASSWORD@HOST:5432/DB] [--accelerator v4-32] \
#       [--version tpu-ubuntu2204-base] [--project PROJECT] [--backend t5x|builtin] \
#       [--dry_run] [-- HPO_RUN_ARGS...]
#
# --dry_run prints every command instead of running it. Arguments after -- go to `hpo run`,
# e.g. -- --strategy=fixed,guided,optuna --gin_file=t5x/examples/t5/t5_1_1/small.gin
#         --gin_file=t5x/translation.gin --gin.MIXTURE_OR_TASK_NAME=wmt19_lten
set -euo pipefail

usage() {
  echo "usage: experiments/tpu_vm.sh --tpu NAME --zone ZONE --model_dir gs://BUCKET/DIR [options] [-- HPO_RUN_ARGS...]" >&2
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

tpu="" zone="" model_dir="" storage="" project=""
accelerator="v4-32" version="tpu-ubuntu2204-base" backend="t5x" dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tpu) tpu="${2:?}"; shift ;;
    --zone) zone="${2:?}"; shift ;;
    --model_dir) model_dir="${2:?}"; shift ;;
    --storage) storage="${2:?}"; shift ;;
    --accelerator) accelerator="${2:?}"; shift ;;
    --version) version="${2:?}"; shift ;;
    --project) project="${2:?}"; shift ;;
    --backend) backend="${2:?}"; shift ;;
    --dry_run) dry_run=1 ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "tpu_vm.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$tpu" ] || [ -z "$zone" ] || [ -z "$model_dir" ]; then
  usage
fi
case "$model_dir" in
  gs://*) ;;
  *) echo "tpu_vm.sh: --model_dir must be a gs:// path that every worker can reach, not '$model_dir'" >&2
     exit 2 ;;
esac
case "$backend" in
  t5x|builtin) ;;
  *) echo "tpu_vm.sh: --backend must be t5x or builtin, not '$backend'" >&2; exit 2 ;;
esac

# A word as a shell reads it back: as it is when it is plain, else in single quotes.
quote() {
  case "$1" in
    ''|*[!A-Za-z0-9_./:=@%+,-]*) printf "'%s'" "${1//\'/\'\\\'\'}" ;;
    *) printf '%s' "$1" ;;
  esac
}

# Words as one command line.
join() {
  local word line=""
  for word in "$@"; do
    line+="${line:+ }$(quote "$word")"
  done
  printf '%s' "$line"
}

# Prints the command (dry run) or runs it.
run() {
  if [ "$dry_run" = 1 ]; then
    join "$@"
    printf '\n'
  else
    "$@"
  fi
}

tpu_vm=(gcloud compute tpus tpu-vm)
where=(--zone="$zone")
[ -n "$project" ] && where+=(--project="$project")
repo="$(cd "$(dirname "$0")/.." && pwd)"
archive="${TMPDIR:-/tmp}/hpo-$tpu.tar.gz"

echo "# 1. The TPU VM slice $tpu ($accelerator in $zone): reuse it, or create it."
if [ "$dry_run" = 1 ]; then
  run "${tpu_vm[@]}" describe "$tpu" "${where[@]}"
  echo "# ... and only if that fails:"
  run "${tpu_vm[@]}" create "$tpu" "${where[@]}" --accelerator-type="$accelerator" --version="$version"
elif ! "${tpu_vm[@]}" describe "$tpu" "${where[@]}" >/dev/null 2>&1; then
  run "${tpu_vm[@]}" create "$tpu" "${where[@]}" --accelerator-type="$accelerator" --version="$version"
fi

echo "# 2. This checkout and its dependencies (T5X from GitHub at pinned commits, JAX for TPU) on every worker."
run git -C "$repo" archive --format=tar.gz --output="$archive" HEAD
run "${tpu_vm[@]}" scp "$archive" "$tpu:hpo.tar.gz" --worker=all "${where[@]}"
install='set -e; mkdir -p hpo && tar -xzf hpo.tar.gz -C hpo && cd hpo && make setup-t5x'
# shellcheck disable=SC2016  # expanded on the worker: the JAX for TPU of the version installed there
install+=' && .venv/bin/pip install -q "jax[tpu]==$(.venv/bin/python -c "import jax; print(jax.__version__)")"'
run "${tpu_vm[@]}" ssh "$tpu" --worker=all "${where[@]}" --command="$install"

echo "# 3. One run over all workers at once; the leader (worker 0) writes $model_dir/comparison.json."
hpo_args=(--multihost --backend="$backend" --model_dir="$model_dir")
if [ -n "$storage" ]; then
  hpo_args+=(--gin.OptunaSearch.storage="$storage")
fi
hpo_args+=("$@")
command="cd hpo && $(join .venv/bin/hpo run "${hpo_args[@]}")"
run "${tpu_vm[@]}" ssh "$tpu" --worker=all "${where[@]}" --command="$command"
