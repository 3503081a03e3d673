#!/usr/bin/env bash
# dcvlr-train's Qwen2-VL / Qwen2.5-VL against transformers on a GPU. Builds
# dcvlr-train against the torch wheel, makes the two tiny random models
# (worker/trainer/testdata/qwen_vl/make_fixtures.py), then checks on cuda:0
#   - fp32: logits within 1e-4 of transformers', the loss, the gradient norm
#     and the loss after one AdamW step;
#   - bf16: our logits no further from the fp32 truth than twice
#     transformers' own bf16 logits are (plus 1e-2);
#   - export: `dcvlr-train hf-export` of each model loads back with
#     transformers' from_pretrained and gives identical logits.
# Prints one line per check and exits 1 if any fails.
#
#   scripts/gpu-parity.sh
#
# Env: PYTHON (python3), BUILD_DIR (build-gpu), JOBS (16),
#      DCVLR_JSON_INCLUDE_DIR (dir with nlohmann/json.hpp if not installed).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
source "$root/scripts/build-trainer-wheel.sh"

work=$(mktemp -d /tmp/dcvlr-gpu-parity.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$py" "$root/worker/trainer/testdata/qwen_vl/make_fixtures.py" "$work/fx" >"$work/fixtures.log" 2>&1 ||
  { cat "$work/fixtures.log"; exit 1; }
"$py" "$root/scripts/gpu_parity.py" "$bin" "$work"
