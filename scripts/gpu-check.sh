#!/usr/bin/env bash
# GPU path check for dcvlr-train: builds only the trainer against the libtorch
# inside the Python torch wheel (no gRPC, yaml-cpp or tests needed), then runs
# a short bf16 benchmark of the qwen2-vl-0.5b preset (Qwen2-0.5B's decoder
# behind a ViT-B-sized vision tower) on one GPU and prints tokens/s and MFU.
#
#   scripts/gpu-check.sh
#
# Env: PYTHON (default python3), BUILD_DIR (default build-gpu), JOBS (16),
#      DCVLR_JSON_INCLUDE_DIR (dir with nlohmann/json.hpp if not installed),
#      MICRO_BATCH (128), STEPS (30, the first 10 are warmup), PRESET.
# Without a GPU (or with a CPU-only libtorch) it still builds, then says so
# and runs two steps on the CPU so the path is exercised.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
build=${BUILD_DIR:-$root/build-gpu}
jobs=${JOBS:-16}
steps=${STEPS:-30}
micro=${MICRO_BATCH:-128}
preset=${PRESET:-qwen2-vl-0.5b}

prefix=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
echo "gpu-check: torch $("$py" -c 'import torch; print(torch.__version__)') at $prefix"
cmake_args=(-DDCVLR_CONTROL_PLANE=OFF -DDCVLR_TESTS=OFF -DCMAKE_BUILD_TYPE=Release
            -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_POLICY_VERSION_MINIMUM=3.5)
[[ -n ${DCVLR_JSON_INCLUDE_DIR:-} ]] && cmake_args+=(-DDCVLR_JSON_INCLUDE_DIR="$DCVLR_JSON_INCLUDE_DIR")
command -v ninja >/dev/null && cmake_args+=(-G Ninja)
# The NCCL header of a pip-installed torch lives in the nvidia-nccl wheel.
nccl_inc=$("$py" -c 'import os, nvidia.nccl as n; print(os.path.join(list(n.__path__)[0], "include"))' 2>/dev/null || true)
[[ -n $nccl_inc && -f $nccl_inc/nccl.h ]] && export NCCL_INCLUDE_DIR=$nccl_inc

start=$(date +%s)
cmake -S "$root" -B "$build" "${cmake_args[@]}" >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log"; exit 1; }
grep -E "dcvlr-train:" "$build.configure.log" || true
cmake --build "$build" -j"$jobs" --target dcvlr-train
echo "gpu-check: build took $(($(date +%s) - start))s"
bin=$build/bin/dcvlr-train

has_gpu=$("$py" -c 'import torch; print(int(torch.cuda.is_available()))')
work=$(mktemp -d /tmp/dcvlr-gpu-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [[ $has_gpu != 1 ]]; then
  echo "gpu-check: no CUDA GPU visible; running 2 CPU steps of tiny-vlm instead"
  preset=tiny-vlm; steps=2; micro=4
fi
cat >"$work/bench.json" <<JSON
{
  "model": {"model_name": "$preset"},
  "data": {"train": {"datasets": [{"dataset_name": "synthetic_shapes",
                                   "dataset_kwargs": {"split": "train", "num_samples": $((micro * (steps + 2)))}}]}},
  "training": {"learning_rate": 1e-4, "max_steps": $steps, "warmup_steps": 5,
               "per_device_train_batch_size": $micro, "gradient_accumulation_steps": 1,
               "max_grad_norm": 1.0, "weight_decay": 0.1, "logging_steps": $(( steps >= 20 ? 10 : 1 )),
               "save_steps": 0, "save_final_model": false, "mixed_precision_dtype": "bf16",
               "output_dir": "$work/out"}
}
JSON
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} DCVLR_CACHE_DIR=$work/cache \
  DCVLR_METRICS_FILE=$work/metrics.jsonl "$bin" --config "$work/bench.json"
"$py" - "$work/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
timed = rows[1:] or rows  # the first window holds startup and warmup
secs = sum(r["step_time_s"] for r in timed)
tps = sum(r["tokens_per_s"] * r["step_time_s"] for r in timed) / secs
sps = sum(r["samples_per_s"] * r["step_time_s"] for r in timed) / secs
mfu = sum(r.get("mfu", 0) * r["step_time_s"] for r in timed) / secs
print(f"gpu-check: tokens_per_s={tps:.0f} samples_per_s={sps:.1f} step_time_s={secs / len(timed):.3f} "
      f"mfu={mfu:.3f}" + ("" if mfu else " (mfu needs a known GPU or DCVLR_PEAK_FLOPS)"))
PY
