#!/usr/bin/env bash
# Installs dependencies, builds retort and runs the whole test suite (GPU tests skip without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh "$@"
cd build
ctest --output-on-failure -j "$(nproc)" --timeout 1200
