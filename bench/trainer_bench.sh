#!/usr/bin/env bash
# Trainer benchmark: samples/s of tiny-vlm with 2 Gloo ranks, per-rank batch
# 8, fixed 96-token sequences, fp32, one intra-op thread per rank, for
# dcvlr-train and for the equivalent PyTorch DDP script (bench/ddp_baseline.py,
# Debian's python3-torch), in the same invocation. Prints both and the ratio.
#
#   bench/trainer_bench.sh [BUILD_DIR]     (default: build-trainer)
#   STEPS=80 ROUNDS=5 bench/trainer_bench.sh   (timed steps after 10 warmup; rounds)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-trainer}
bin=$build/bin/dcvlr-train
steps=${STEPS:-60}
warmup=10
[[ -x $bin ]] || { echo "trainer_bench: $bin not built" >&2; exit 1; }

work=$(mktemp -d /tmp/dcvlr-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))

cat >"$work/config.json" <<JSON
{
  "model": {"model_name": "tiny-vlm"},
  "data": {"train": {"datasets": [{"dataset_name": "synthetic_shapes",
                                   "dataset_kwargs": {"split": "train", "num_samples": 4096}}]}},
  "training": {"learning_rate": 3e-4, "max_steps": $((steps + warmup)), "warmup_steps": 0,
               "per_device_train_batch_size": 8, "max_grad_norm": 1.0, "weight_decay": 0.01,
               "logging_steps": $warmup, "save_steps": 0, "num_threads": 1,
               "pad_to_max_length": true, "mixed_precision_dtype": "none",
               "output_dir": "$work/out"}
}
JSON

run_native() {
  local pids=()
  for r in 0 1; do
    RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 \
      MASTER_PORT=$port DCVLR_CACHE_DIR=$work/cache DCVLR_METRICS_FILE=$work/metrics.jsonl \
      DCVLR_CHECKPOINT_DIR=$work/ckpt DCVLR_OUTPUT_DIR=$work/out \
      OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
      "$bin" --config "$work/config.json" 2>"$work/rank$r.log" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  # Mean over the windows after the first (which holds startup and warmup).
  /usr/bin/python3 - "$work/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
timed = rows[1:]
t = sum(r["step_time_s"] * 10 for r in timed)
n = sum(r["samples_per_s"] * r["step_time_s"] * 10 for r in timed)
print(f"native samples_per_s={n / t:.2f} step_time_s={t / (10 * len(timed)):.4f}")
PY
}

echo "machine: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores), load $(cut -d' ' -f1-3 /proc/loadavg)"
# Rounds alternate between the two so that load from anything else on the
# machine hits both alike; the medians are compared.
rounds=${ROUNDS:-3}
natives=() ddps=()
for ((i = 1; i <= rounds; i++)); do
  port=$((port + 2))
  rm -f "$work/metrics.jsonl"; rm -rf "$work/ckpt"
  native=$(run_native)
  ddp=$(OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 /usr/bin/python3 "$root/bench/ddp_baseline.py" \
          --world 2 --batch 8 --steps $((steps + warmup)) --warmup $warmup --port $((port + 1)) |
        grep '^ddp ')
  echo "round $i: $native | $ddp"
  natives+=("$(sed 's/.*samples_per_s=\([0-9.]*\).*/\1/' <<<"$native")")
  ddps+=("$(sed 's/.*samples_per_s=\([0-9.]*\).*/\1/' <<<"$ddp")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
a=$(median "${natives[@]}")
b=$(median "${ddps[@]}")
echo "median native samples_per_s=$a"
echo "median ddp samples_per_s=$b"
awk -v a="$a" -v b="$b" 'BEGIN { printf "ratio native/ddp=%.2f\n", a / b }'
