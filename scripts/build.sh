#!/usr/bin/env bash
# Configures and builds retort into ./build (CUDA backend when nvcc is found). Extra arguments go
# to CMake, e.g. scripts/build.sh -DRETORT_CUDA=OFF
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j "$(nproc)"
