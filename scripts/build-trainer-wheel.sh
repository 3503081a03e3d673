# Sourced by the GPU scripts (gpu-check.sh, gpu-parity.sh): builds only
# dcvlr-train against the libtorch inside the Python torch wheel (no gRPC,
# yaml-cpp or tests needed) and sets $bin to it.
# Needs: $root, $py. Env: BUILD_DIR (default build-gpu), JOBS (16),
#        DCVLR_JSON_INCLUDE_DIR (dir with nlohmann/json.hpp if not installed),
#        ICU_ROOT (an ICU prefix, if the system has no libicu-dev).
build=${BUILD_DIR:-$root/build-gpu}
jobs=${JOBS:-16}
prefix=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
echo "${0##*/}: torch $("$py" -c 'import torch; print(torch.__version__)') at $prefix"
cmake_args=(-DDCVLR_CONTROL_PLANE=OFF -DDCVLR_TESTS=OFF -DCMAKE_BUILD_TYPE=Release
            -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_POLICY_VERSION_MINIMUM=3.5)
[[ -n ${DCVLR_JSON_INCLUDE_DIR:-} ]] && cmake_args+=(-DDCVLR_JSON_INCLUDE_DIR="$DCVLR_JSON_INCLUDE_DIR")
# ICU (tokenizer.json tokenizers) from a prefix when the system has no headers.
[[ -n ${ICU_ROOT:-} ]] && cmake_args+=(-DICU_ROOT="$ICU_ROOT")
command -v ninja >/dev/null && cmake_args+=(-G Ninja)
# The NCCL header of a pip-installed torch lives in the nvidia-nccl wheel.
nccl_inc=$("$py" -c 'import os, nvidia.nccl as n; print(os.path.join(list(n.__path__)[0], "include"))' 2>/dev/null || true)
[[ -n $nccl_inc && -f $nccl_inc/nccl.h ]] && export NCCL_INCLUDE_DIR=$nccl_inc

start=$(date +%s)
cmake -S "$root" -B "$build" "${cmake_args[@]}" >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log"; exit 1; }
grep -E "dcvlr-train:|ICU" "$build.configure.log" || true
cmake --build "$build" -j"$jobs" --target dcvlr-train
echo "${0##*/}: build took $(($(date +%s) - start))s"
bin=$build/bin/dcvlr-train
