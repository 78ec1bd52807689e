#!/usr/bin/env bash
# Installs dependencies, builds retort and runs the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
./build/tools/retort_engine_demo
