#!/usr/bin/env bash
# The main job, end to end on one machine: sets up (apt) and builds dcvlr,
# starts a local cluster -- one coordinator with its embedded state dir and
# two agents with two pretend GPUs each -- submits a job file (default: the
# tiny-vlm training demo), follows its logs and waits for it to finish.
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
  if [[ -x "$bin/dcvlr-train" ]]; then
    job_file=configs/demo/train.yaml
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

"$bin/dcvlr-coordinator" --listen 127.0.0.1:0 --state-dir "$dir/state" \
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

id=$("$bin/dcvlrctl" submit "$job_file")
echo "submitted $job_file as $id; following rank 0's log"
"$bin/dcvlrctl" logs "$id" --rank 0 --follow || true
status=0
"$bin/dcvlrctl" wait "$id" || status=$?
"$bin/dcvlrctl" describe "$id"
echo "cluster files (logs, checkpoints, state) are in $dir"
exit $status
