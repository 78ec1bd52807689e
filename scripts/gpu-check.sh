#!/usr/bin/env bash
# The whole GPU check in one call, in two halves:
#
#   scripts/gpu-check.sh bundle   # here, on a build machine with the CUDA toolkit (no GPU needed)
#   scripts/gpu-check.sh run      # there, on the GPU machine, with .gpu/ carried along
#
# `bundle` configures and builds ./build-gpu (CUDA for sm_90, shared layer libraries so the CUDA
# device code is not repeated in every test binary, CPU code for x86-64-v3 = AVX2 + FMA, which
# every GPU server has, instead of this machine's -march=native) and gathers what the GPU
# machine needs into ./.gpu (git-ignored, well under the 64 MiB a carried folder may take):
# stripped libraries, test binaries, retort, step_bench, libgomp, and Fashion-MNIST.
#
# `run` uses the cuDNN/cuBLAS/cudart libraries of the machine's PyTorch (nvidia.* wheels), checks
# their versions against the ones linked here, then:
#   1. runs every test binary; a CUDA test that skips on a GPU machine counts as a failure;
#   2. the correctness gate: one KD and one resnet56 step exported by step_bench (fp32) and
#      replayed by bench/torch_reference.py --check-step from the same weights and batch;
#   3. the step benchmark, retort and PyTorch eager interleaved trial by trial (ours, PyTorch,
#      ours, ...), then the torch.compile variants;
#   4. prints the table of bench/compare_gpu.py (images/s and ratios; targets met or not).
# Results go to $OUT when set (the device tool fetches it), else ./gpu-check-out. Variables:
# TRIALS (3), BATCHES (64,128), WORKLOADS (kd,resnet56), PRECISION (tf32), and STAGES (default
# "tests gate bench compile"): one device command may run 10 minutes, and torch.compile alone
# can take several, so a first call may run STAGES="tests gate bench" and a second "compile"
# (with OUT kept, or compare_gpu.py run on both calls' JSONL).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUNDLE=$ROOT/.gpu

die() { echo "gpu-check: $*" >&2; exit 1; }

bundle() {
  command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || die "no nvcc: the CUDA toolkit is needed to build"
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DRETORT_CUDA=ON -DRETORT_CUDA_ARCHS=90 \
        -DBUILD_SHARED_LIBS=ON -DRETORT_NATIVE=OFF -DCMAKE_CXX_FLAGS="-march=x86-64-v3" \
        -DRETORT_BUILD_TESTS=ON -DRETORT_BUILD_BENCH=ON \
        || die "configure failed"
  cmake --build build-gpu -j "$(nproc)" || die "build failed"
  rm -rf "$BUNDLE"
  mkdir -p "$BUNDLE"/{lib,tests,bin,fashion-mnist}
  find build-gpu -name 'libretort_*.so' -exec cp {} "$BUNDLE/lib/" \;
  find build-gpu/tests -maxdepth 1 -type f -executable -exec cp {} "$BUNDLE/tests/" \;
  cp build-gpu/tools/retort build-gpu/bench/step_bench "$BUNDLE/bin/"
  cp "$(g++ -print-file-name=libgomp.so.1)" "$BUNDLE/lib/" 2>/dev/null || true
  strip --strip-unneeded "$BUNDLE"/lib/*.so* "$BUNDLE"/tests/* "$BUNDLE"/bin/* 2>/dev/null
  # The first 12,000 training images (the GPU training test draws 3,000) and the test set: a
  # quarter of the full files' size, which must fit the carry limit beside everything else.
  python3 - "$BUNDLE/fashion-mnist" <<'EOF' ||
import gzip, shutil, struct, sys
src, dst, keep = "/usr/share/datasets/fashion-mnist", sys.argv[1], 12000
for kind, header in (("images-idx3", 16), ("labels-idx1", 8)):
    with gzip.open(f"{src}/train-{kind}-ubyte.gz", "rb") as f:
        data = f.read()
    count = struct.unpack(">I", data[4:8])[0]
    item = (len(data) - header) // count
    out = data[:4] + struct.pack(">I", keep) + data[8:header] + data[header:header + keep * item]
    with gzip.open(f"{dst}/train-{kind}-ubyte.gz", "wb") as f:
        f.write(out)
    shutil.copy(f"{src}/t10k-{kind}-ubyte.gz", dst)
EOF
    echo "gpu-check: Fashion-MNIST not installed here; the GPU training test will skip"
  # The versions this build linked, for `run` to compare with the machine's.
  local inc
  inc=$(grep '^CUDNN_INCLUDE_DIR:' build-gpu/CMakeCache.txt | cut -d= -f2)
  {
    echo "cudnn $(grep -E '#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) ' "$inc/cudnn_version.h" |
      awk '{printf "%s.", $3}' | sed 's/\.$//')"
    echo "cuda $(/usr/local/cuda/bin/nvcc --version | grep -o 'release [0-9.]*' | cut -d' ' -f2)"
    echo "source $ROOT"
  } > "$BUNDLE/versions.txt"
  du -sh "$BUNDLE"
  echo "bundle ready: carry .gpu and run scripts/gpu-check.sh run there"
}

run() {
  [ -d "$BUNDLE/tests" ] || die "no .gpu bundle: run 'scripts/gpu-check.sh bundle' on the build machine and carry .gpu"
  local out=${OUT:-$ROOT/gpu-check-out}
  mkdir -p "$out"
  local trials=${TRIALS:-3} batches=${BATCHES:-64,128} workloads=${WORKLOADS:-kd,resnet56}
  local precision=${PRECISION:-tf32} stages=" ${STAGES:-tests gate bench compile} "
  local status=0

  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader || die "no GPU visible"
  # The machine's PyTorch carries cuDNN, cuBLAS and the CUDA runtime as nvidia.* packages.
  local libs
  libs=$(python3 - <<'EOF'
import importlib, os
dirs = []
for name in ("nvidia.cudnn", "nvidia.cublas", "nvidia.cuda_runtime", "nvidia.cu13", "nvidia"):
    try:
        mod = importlib.import_module(name)
    except Exception:
        continue
    for base in list(getattr(mod, "__path__", [])):
        for root, _, files in os.walk(base):
            if any(f.startswith(("libcudnn.so", "libcublas.so", "libcudart.so")) for f in files):
                dirs.append(root)
print(":".join(dict.fromkeys(dirs)))
EOF
)
  export LD_LIBRARY_PATH="$BUNDLE/lib:${libs}:${LD_LIBRARY_PATH:-}"
  export RETORT_FASHION_MNIST="$BUNDLE/fashion-mnist"
  export OMP_WAIT_POLICY=PASSIVE
  echo "linked here: $(tr '\n' ' ' < "$BUNDLE/versions.txt")"
  echo "machine: $(python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())')"
  ldd "$BUNDLE/bin/retort" | grep -E 'not found|cudnn|cublas|cudart' | tee "$out/ldd.txt"
  grep -q 'not found' "$out/ldd.txt" && die "libraries missing on this machine (see above)"

  # The tests know the source tree's fixtures and the retort binary by their paths on the build
  # machine: make those paths lead here.
  local src
  src=$(awk '$1 == "source" {print $2}' "$BUNDLE/versions.txt")
  if [ -n "$src" ] && [ "$src" != "$ROOT" ] && [ ! -e "$src" ]; then
    mkdir -p "$(dirname "$src")" && ln -s "$ROOT" "$src"
  fi
  mkdir -p "$ROOT/build-gpu/tools" && cp -f "$BUNDLE/bin/retort" "$ROOT/build-gpu/tools/retort"

  # 1. The test suite.
  if [[ $stages == *" tests "* ]]; then
    local failed=() skipped=()
    for t in "$BUNDLE"/tests/*; do
      local name log
      name=$(basename "$t")
      log="$out/test_$name.log"
      if ! (cd "$ROOT" && timeout 900 "$t" > "$log" 2>&1); then
        failed+=("$name")
        tail -30 "$log"
      fi
      # On a GPU machine nothing CUDA may skip (CPU-only tests may skip for their own reasons).
      if [[ $name == *cuda* ]] && grep -q '^\[  SKIPPED \]' "$log"; then
        grep '^\[  SKIPPED \]' "$log" | head -5
        skipped+=("$name")
      fi
    done
    echo "tests: $(ls "$BUNDLE/tests" | wc -l) binaries, failed: ${failed[*]:-none}, CUDA tests that skipped: ${skipped[*]:-none}"
    [ ${#failed[@]} -eq 0 ] && [ ${#skipped[@]} -eq 0 ] || status=1
  fi

  # 2. The correctness gate: retort's step on the GPU against PyTorch's from the same weights.
  if [[ $stages == *" gate "* ]]; then
    rm -rf "$out/gate"
    "$BUNDLE/bin/step_bench" --device cuda --workloads kd,resnet56 --batches 64 --precision fp32 \
        --export-step "$out/gate" || status=1
    for d in "$out"/gate/*/; do
      [ -f "$d/expected.json" ] || continue
      # Deep nets at small batches are ill-conditioned: a tensor passes at up to 3x PyTorch's own
      # fp32-vs-fp64 error (bench/README.md).
      python3 bench/torch_reference.py --check-step "$d" --device cuda --slack 3 | tail -4 || status=1
    done
  fi

  # 3. The benchmark, interleaved trial by trial.
  local jr="$out/retort.jsonl" jt="$out/torch.jsonl"
  if [[ $stages == *" bench "* ]]; then
    rm -f "$jr" "$jt"
    for ((i = 1; i <= trials; ++i)); do
      "$BUNDLE/bin/step_bench" --device cuda --workloads "$workloads" --batches "$batches" \
          --precision "$precision" --trials 1 --json "$jr" || status=1
      python3 bench/torch_reference.py --device cuda --workloads "$workloads" --batches "$batches" \
          --precision "$precision" --variants eager_nchw,eager_cl --trials 1 --json "$jt" || status=1
    done
  fi
  if [[ $stages == *" compile "* ]]; then
    python3 bench/torch_reference.py --device cuda --workloads "$workloads" --batches "$batches" \
        --precision "$precision" --variants compile,compile_max --trials "$trials" --json "$jt" || status=1
  fi

  # 4. The table.
  local rows=()
  for f in "$jr" "$jt"; do [ -s "$f" ] && rows+=("$f"); done
  if [ ${#rows[@]} -gt 0 ]; then
    python3 bench/compare_gpu.py "${rows[@]}" --markdown-out "$out/table.md" || status=1
  else
    echo "gpu-check: no benchmark rows were written"
    status=1
  fi
  echo "gpu-check: $([ $status -eq 0 ] && echo PASSED || echo FAILED) (logs and JSONL in $out)"
  return $status
}

case "${1:-}" in
  bundle) bundle ;;
  run) run ;;
  *) sed -n '2,21p' "$0"; exit 2 ;;
esac
