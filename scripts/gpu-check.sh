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
steps=${STEPS:-30}
micro=${MICRO_BATCH:-128}
preset=${PRESET:-qwen2-vl-0.5b}

source "$root/scripts/build-trainer-wheel.sh"

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
