#!/usr/bin/env bash
# The main job, end to end on one machine: sets up (apt) and builds dcvlr,
# starts a local cluster -- one coordinator with its embedded state dir and
# two agents with two pretend GPUs each, sharing a checkpoint root -- submits
# a job file (default: the DCVLR pipeline, configs/demo/pipeline.yaml: train
# tiny-vlm on synthetic data, then score it on the held-out benchmark),
# follows each job's logs and waits for it, and ends by printing the scores.
#
#   scripts/demo.sh [JOBFILE]      DEMO_DIR=... keeps the cluster's files there
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

scripts/setup.sh
scripts/build.sh

bin="$repo/${BUILD_DIR:-build}/bin"
job_file=${1:-}
if [[ -z "$job_file" ]]; then
  if [[ -x "$bin/dcvlr-train" && -x "$bin/dcvlr-eval" ]]; then
    job_file=configs/demo/pipeline.yaml
  else
    job_file=configs/demo/hello.yaml
  fi
fi
dir=${DEMO_DIR:-$(mktemp -d /tmp/dcvlr-demo-XXXXXX)}
mkdir -p "$dir"

pids=()
cleanup() {
  # Agents first: they stop their jobs' processes on SIGTERM.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT

# The checkpoint root stands for the file system every node of a lab mounts:
# the eval job reads the train job's checkpoints from there.
"$bin/dcvlr-coordinator" --listen 127.0.0.1:0 --state-dir "$dir/state" \
  --checkpoint-root "$dir/shared/checkpoints" \
  --benchmarks configs/benchmarks.yaml \
  >"$dir/coordinator.log" 2>&1 &
pids+=($!)
export DCVLR_COORDINATOR="$dir/state/coordinator.addr"
for _ in $(seq 100); do [[ -s $DCVLR_COORDINATOR ]] && break; sleep 0.1; done
echo "coordinator at $(cat "$DCVLR_COORDINATOR"), state in $dir/state"

for node in node-a node-b; do
  "$bin/dcvlr-agent" --name "$node" --gpus 2 --work-dir "$dir/$node" \
    >"$dir/$node.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do
  ready=$("$bin/dcvlrctl" nodes | grep -c READY || true)
  [[ $ready -ge 2 ]] && break
  sleep 0.1
done
"$bin/dcvlrctl" nodes

ids=$("$bin/dcvlrctl" submit "$job_file")
status=0
for id in $ids; do
  echo "== $id: following rank 0's log"
  "$bin/dcvlrctl" logs "$id" --rank 0 --follow || true
  "$bin/dcvlrctl" wait "$id" || status=$?
  "$bin/dcvlrctl" describe "$id"
done
echo "cluster files (logs, checkpoints, state) are in $dir"
# The scores, as dcvlr-eval's last lines say them.
for id in $ids; do
  "$bin/dcvlrctl" logs "$id" --rank 0 | grep -E '^(rank=0 )?(benchmark|done benchmarks)' || true
done
exit $status
