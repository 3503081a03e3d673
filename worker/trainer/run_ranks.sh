#!/usr/bin/env bash
# Runs dcvlr-train as N local ranks with torchrun's environment, the way the
# agent starts a `kind: train` job: one process per (pretend) GPU slot.
#
#   worker/trainer/run_ranks.sh N CONFIG.json [WORK_DIR]
#
# Env: DCVLR_TRAIN (binary; default build-trainer/bin/dcvlr-train). Rank logs
# go to WORK_DIR/rankK.log; rank 0's also to stderr. Exits with the highest
# rank exit code.
set -uo pipefail

n=${1:?ranks}
config=${2:?config}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${3:-$(mktemp -d /tmp/dcvlr-ranks.XXXXXX)}
bin=${DCVLR_TRAIN:-$root/build-trainer/bin/dcvlr-train}
mkdir -p "$work"
port=$((20000 + RANDOM % 20000))

pids=()
for ((r = 0; r < n; r++)); do
  RANK=$r LOCAL_RANK=$r WORLD_SIZE=$n LOCAL_WORLD_SIZE=$n NODE_RANK=0 GROUP_RANK=0 \
    MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    DCVLR_OUTPUT_DIR=${DCVLR_OUTPUT_DIR:-$work/out} \
    DCVLR_CHECKPOINT_DIR=${DCVLR_CHECKPOINT_DIR:-$work/checkpoints} \
    DCVLR_METRICS_FILE=${DCVLR_METRICS_FILE:-$work/metrics.jsonl} \
    DCVLR_CACHE_DIR=${DCVLR_CACHE_DIR:-$work/cache} \
    "$bin" --config "$config" 2>"$work/rank$r.log" &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
tail -n +1 -F "$work/rank0.log" 2>/dev/null >&2 &
tailer=$!
rc=0
for p in "${pids[@]}"; do
  wait "$p"
  code=$?
  ((code > rc)) && rc=$code
done
kill "$tailer" 2>/dev/null
exit $rc
