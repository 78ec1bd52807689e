#!/usr/bin/env bash
# Installs dependencies, builds retort and runs the main job: `retort demo`, a teacher and five
# students (CE, KD, KCD, PWKD, PWKD+KCD) on Fashion-MNIST, compared in runs/demo/report.html.
# Extra arguments go to `retort demo` (see `build/tools/retort demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
./build/tools/retort demo "$@"
