#!/usr/bin/env bash
# Installs every Debian package dcvlr needs to build, test and run. Idempotent:
# packages already present are left alone, and apt is only called when
# something is missing. Run as root or with passwordless sudo.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git clang-format
  # control plane: wire API, RPC, base library, config, metrics, store, tests
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev
  libabsl-dev libyaml-cpp-dev prometheus-cpp-dev libsqlite3-dev
  libcurl4-openssl-dev
  libgtest-dev libgmock-dev libcli11-dev libgoogle-glog-dev
  # identity: TLS certificates (OpenSSL), MUNGE credentials and its daemon,
  # test users (runuser is in util-linux, useradd in passwd)
  libssl-dev openssl libmunge-dev munge passwd util-linux
  # worker programs: libtorch (CPU) + Gloo headers for c10d, JSON, fast BLAS
  libtorch-dev libgloo-dev nlohmann-json3-dev libopenblas0-pthread
  # tokenizer.json tokenizers: Unicode normalisation and regex classes
  libicu-dev
  # dcvlr-eval: JPEG benchmark images (optional at build time)
  libjpeg62-turbo-dev
  # benchmark baseline (PyTorch DDP) and monitoring tests
  python3 python3-torch prometheus
  # process inspection in tests
  procps
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
