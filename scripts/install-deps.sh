#!/usr/bin/env bash
# Installs what retort needs to build and test on Debian 12 (run as root, or with sudo present).
# The CUDA toolkit (nvcc, cuBLAS, cuDNN) is not installed here: when /usr/local/cuda is present the
# CUDA backend is built too, otherwise the build is CPU-only.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libeigen3-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libcli11-dev libstb-dev zlib1g-dev
  dataset-fashion-mnist
)
# PyTorch is only needed to regenerate golden fixtures and for the CPU reference benchmark.
if [[ "${RETORT_WITH_TORCH:-0}" == "1" ]]; then packages+=(python3-torch); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "retort: all build dependencies are installed"
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "retort: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "retort: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
