#!/usr/bin/env bash
# Does the README's main command learn on every machine? Trains the demo's
# model exactly as the demo's train job does (configs/demo/train.yaml,
# rendered by `dcvlrctl render --config`, 2 ranks over Gloo) over a grid of
# seeds (training.seed: weight init and data order) x every OpenBLAS core
# type this machine can run (and the library's own choice), and prints each
# run's final held-out accuracy and the share of runs that succeed
# (accuracy >= THRESHOLD).
#
#   bench/demo_robustness.sh
#   SEEDS="1 2" CORES="Haswell unset" bench/demo_robustness.sh
#
# Env: BUILD_DIR (build), SEEDS (1..8), CORES (every runnable type and
# "unset"), THRESHOLD (0.80), RANKS (2), OUT (a new dir under /tmp; results.tsv
# and every run's logs are kept there), ALL=1 (see below).
#
# Core types whose arithmetic is the same give the same run bit for bit, so
# by default each class of identical arithmetic trains once per seed and its
# other members are reported with the class's result. Two types are one
# class when dcvlr-train, started from the same seed, ends its first
# SIGNATURE_STEPS (20) steps with the same parameter checksum. ALL=1 trains
# every core type anyway.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/${BUILD_DIR:-build}/bin
seeds=${SEEDS:-1 2 3 4 5 6 7 8}
threshold=${THRESHOLD:-0.80}
ranks=${RANKS:-2}
sig_steps=${SIGNATURE_STEPS:-20}
out=${OUT:-$(mktemp -d /tmp/dcvlr-robustness.XXXXXX)}
mkdir -p "$out"
for b in dcvlr-train dcvlrctl; do
  [[ -x $bin/$b ]] || { echo "demo_robustness: $bin/$b not built" >&2; exit 1; }
done

"$bin/dcvlrctl" render "$root/configs/demo/train.yaml" --config >"$out/demo.json"

# The config with training keys replaced: with_training FILE KEY=VALUE...
with_training() {
  local file=$1
  shift
  /usr/bin/python3 - "$out/demo.json" "$@" >"$file" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    c["training"][k] = json.loads(v)
print(json.dumps(c, indent=1))
PY
}

# Core types: every name OpenBLAS's dynamic build knows on x86-64. A type
# the CPU cannot run dies of SIGILL in the probe's GEMM; a name the library
# maps to another (e.g. SapphireRapids without AMX) counts once, under the
# name it reports.
probe_core() {  # prints the core name OpenBLAS runs, or nothing
  OPENBLAS_CORETYPE=$1 /usr/bin/python3 - 2>/dev/null <<'PY' || true
import ctypes, ctypes.util
lib = ctypes.CDLL("libblas.so.3")
name = getattr(lib, "openblas_get_corename", None)
if name is None:
    raise SystemExit(0)  # not OpenBLAS: core types mean nothing
name.restype = ctypes.c_char_p
n = ctypes.c_int(64); one = ctypes.c_float(1); zero = ctypes.c_float(0)
a = (ctypes.c_float * 4096)(*([0.5] * 4096)); c = (ctypes.c_float * 4096)()
t = ctypes.c_char(b"N")
lib.sgemm_(ctypes.byref(t), ctypes.byref(t), ctypes.byref(n), ctypes.byref(n),
           ctypes.byref(n), ctypes.byref(one), a, ctypes.byref(n), a,
           ctypes.byref(n), ctypes.byref(zero), c, ctypes.byref(n))
assert c[0] == 16.0
print(name().decode())
PY
}

if [[ -n ${CORES:-} ]]; then
  read -r -a cores <<<"$CORES"
else
  cores=()
  for c in Prescott Core2 Penryn Dunnington Nehalem Atom Opteron Opteron_SSE3 \
    Barcelona Bobcat Bulldozer Piledriver Steamroller Excavator Nano \
    Sandybridge Haswell Zen SkylakeX Cooperlake SapphireRapids; do
    got=$(probe_core "$c")
    [[ -n $got && ${got,,} == "${c,,}" ]] && cores+=("$c")
  done
  cores+=(unset)
fi

# run_train DIR CORE CONFIG: the demo's train job's processes, on one core
# type ("unset": the library's own choice).
run_train() {
  local dir=$1 core=$2 config=$3
  mkdir -p "$dir"
  (
    if [[ $core == unset ]]; then unset OPENBLAS_CORETYPE; else export OPENBLAS_CORETYPE=$core; fi
    DCVLR_CACHE_DIR=$out/cache DCVLR_TRAIN=$bin/dcvlr-train \
      "$root/worker/trainer/run_ranks.sh" "$ranks" "$config" "$dir" 2>/dev/null
  ) || true
}

echo "machine: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores)," \
  "OpenBLAS's own choice: $(env -u OPENBLAS_CORETYPE bash -c "$(declare -f probe_core); probe_core x" || true)"
echo "core types: ${cores[*]}"
echo "seeds: $seeds; success: accuracy >= $threshold; results and logs: $out"

# Classes of identical arithmetic.
declare -A class_of
reps=()
if [[ ${ALL:-0} == 1 ]]; then
  for c in "${cores[@]}"; do class_of[$c]=$c; reps+=("$c"); done
else
  with_training "$out/signature.json" "max_steps=$sig_steps" "eval_steps=0" \
    "save_steps=0" "save_final_model=false"
  declare -A rep_of_sum
  for c in "${cores[@]}"; do
    run_train "$out/signature/$c" "$c" "$out/signature.json"
    sum=$(grep -ho 'params_fnv64=[0-9a-f]*' "$out/signature/$c/rank0.log" || true)
    [[ -n $sum ]] || { echo "demo_robustness: $c: no checksum, see $out/signature/$c" >&2; exit 1; }
    if [[ -z ${rep_of_sum[$sum]:-} ]]; then
      rep_of_sum[$sum]=$c
      reps+=("$c")
    fi
    class_of[$c]=${rep_of_sum[$sum]}
  done
  echo "classes of identical arithmetic (first ${sig_steps} steps):"
  for r in "${reps[@]}"; do
    members=()
    for c in "${cores[@]}"; do [[ ${class_of[$c]} == "$r" ]] && members+=("$c"); done
    echo "  ${members[*]}"
  done
fi

declare -A acc wall
printf '%-14s %-14s %5s %9s %7s\n' core_type trained_as seed accuracy wall_s
for seed in $seeds; do
  with_training "$out/seed$seed.json" "seed=$seed"
  for r in "${reps[@]}"; do
    dir=$out/runs/$r-seed$seed
    run_train "$dir" "$r" "$out/seed$seed.json"
    line=$(grep -ho 'done step=.*' "$dir/rank0.log" || true)
    a=$(sed -n 's/.*eval_accuracy=\([0-9.]*\).*/\1/p' <<<"$line")
    w=$(sed -n 's/.*wall_s=\([0-9.]*\).*/\1/p' <<<"$line")
    acc[$r/$seed]=${a:-failed}
    wall[$r/$seed]=${w:--}
    for c in "${cores[@]}"; do
      [[ ${class_of[$c]} == "$r" ]] || continue
      printf '%-14s %-14s %5s %9s %7s\n' "$c" "$r" "$seed" "${acc[$r/$seed]}" "${wall[$r/$seed]}"
      printf '%s\t%s\t%s\t%s\t%s\n' "$c" "$r" "$seed" "${acc[$r/$seed]}" "${wall[$r/$seed]}" >>"$out/results.tsv"
    done
  done
done

awk -F'\t' -v t="$threshold" '
  { n++; if ($4 != "failed" && $4 + 0 >= t) ok++
    if (worst == "" || $4 == "failed" || ($4 + 0 < worst + 0 && worst != "failed")) {
      worst = $4; at = $1 " seed " $3 } }
  END { printf "runs=%d succeeded=%d (%.0f%%) worst=%s (%s) threshold=%s\n",
               n, ok, 100 * ok / n, worst, at, t
        exit ok == n ? 0 : 1 }' "$out/results.tsv"
