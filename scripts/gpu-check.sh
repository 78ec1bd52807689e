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
# `run` uses the cuDNN/cuBLAS/cudart libraries of the machine's PyTorch (nvidia.* wheels) and
# stops within seconds when they cannot serve this build (CUDA major, cuDNN version, missing
# libraries), when the bundle is older than the source files beside it, or when a first smoke
# test cannot bring up the CUDA context. Then each stage, within a deadline (DEADLINE, default
# 540 s: the device tool stops a command at 600 s):
#   1. the test binaries with CUDA cases (TESTS=all: every binary), each under a timeout; a CUDA
#      case that skips on a GPU machine counts as a failure;
#   2. the correctness gate: one KD and one resnet56 step exported by step_bench (fp32) and
#      replayed by bench/torch_reference.py --check-step from the same weights and batch;
#   3. the step benchmark, retort and PyTorch eager interleaved trial by trial (ours, PyTorch,
#      ours, ...), then the table of bench/compare_gpu.py (images/s, ratios, targets);
#   4. with "compile" in STAGES: torch.compile for the KD step at batch 64, and the table again.
# It ends with a summary (failed tests with their first assertion messages, gate verdicts, target
# lines, stages cut for time) and the table, so the last lines of output say what happened.
# $OUT (the device tool fetches at most 8 files) receives summary.txt, table.md, retort.jsonl,
# torch.jsonl, gate.log and logs.tar.gz; work files stay in /tmp/gpu-check. Variables: STAGES
# (default "tests gate bench"), TESTS (gpu or all), TRIALS (3), BATCHES (64,128), WORKLOADS
# (kd,resnet56), PRECISION (tf32), DEADLINE (540).
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
  # Every other library the binaries load that a stock GPU image may lack (libstb from Debian):
  # all but the C/C++ runtime, zlib, the CUDA libraries (the machine's PyTorch brings those) and
  # retort's own.
  local skip='^(linux-vdso|ld-linux|libc[.]|libm[.]|libgcc_s|libstdc[+][+]|libz[.]|libpthread|libdl|librt|libcuda[.]|libcudart|libcublas|libcudnn|libretort_|libgomp)'
  local name path
  find "$BUNDLE/lib" "$BUNDLE/bin" "$BUNDLE/tests" -type f | xargs ldd 2>/dev/null |
    awk '$2 == "=>" && $3 ~ /^[/]/ {print $1, $3}' | sort -u |
    while read -r name path; do
      [[ $name =~ $skip ]] || cp -L "$path" "$BUNDLE/lib/$name"
    done
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
  # The sources this bundle was built from, for `run` to refuse a stale bundle (documents and the
  # Python scripts, which run from the working tree, are not part of it).
  git ls-files -z -- CMakeLists.txt engine kernels nn distill datasets tools bench tests \
      ':!*.md' ':!*.py' | xargs -0 sha1sum > "$BUNDLE/sources.sha1"
  du -sh "$BUNDLE"
  echo "bundle ready: carry .gpu and run scripts/gpu-check.sh run there"
}

run() {
  [ -d "$BUNDLE/tests" ] || die "no .gpu bundle: run 'scripts/gpu-check.sh bundle' on the build machine and carry .gpu"
  local out=${OUT:-$ROOT/gpu-check-out} work=/tmp/gpu-check
  local trials=${TRIALS:-3} batches=${BATCHES:-64,128} workloads=${WORKLOADS:-kd,resnet56}
  local precision=${PRECISION:-tf32} stages=" ${STAGES:-tests gate bench} " deadline=${DEADLINE:-540}
  local status=0
  mkdir -p "$out"
  rm -rf "$work"
  mkdir -p "$work/logs"
  local summary=$work/summary.txt
  note() { echo "$*" | tee -a "$summary"; }
  left() { echo $((deadline - SECONDS)); }
  finish() {
    for f in summary.txt table.md retort.jsonl torch.jsonl gate.log; do
      [ -f "$work/$f" ] && cp "$work/$f" "$out/"
    done
    tar -C "$work" -czf "$out/logs.tar.gz" --exclude='*.safetensors' logs $([ -d "$work/gate" ] && echo gate) 2>/dev/null
    echo
    echo "================ gpu-check summary ================"
    cat "$summary"
    [ -f "$work/table.md" ] && cat "$work/table.md"
    echo "gpu-check: $([ "$status" -eq 0 ] && echo PASSED || echo FAILED) (files in $out)"
  }
  chmod +x "$BUNDLE"/bin/* "$BUNDLE"/tests/* 2>/dev/null

  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || die "no GPU visible"
  # A bundle older than the sources beside it would test other code.
  if [ -f "$BUNDLE/sources.sha1" ]; then
    local stale
    stale=$(cd "$ROOT" && sha1sum --quiet -c "$BUNDLE/sources.sha1" 2>/dev/null | head -5 | tr '\n' ' ')
    [ -z "$stale" ] || die "the bundle is stale (rebuild with 'scripts/gpu-check.sh bundle'): $stale"
  fi
  # The machine's PyTorch carries cuDNN, cuBLAS and the CUDA runtime as nvidia.* packages.
  local libs
  libs=$(python3 - <<'PY'
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
PY
)
  # Only retort's processes get the bundle's libraries (python keeps its own libgomp).
  local rlib="$BUNDLE/lib:${libs}:${LD_LIBRARY_PATH:-}"
  export RETORT_FASHION_MNIST="$BUNDLE/fashion-mnist"
  export OMP_WAIT_POLICY=PASSIVE
  note "linked here: $(tr '\n' ' ' < "$BUNDLE/versions.txt")"
  # Stop in seconds when the machine's libraries cannot serve this build.
  if ! python3 - "$BUNDLE/versions.txt" > "$work/logs/versions.log" 2>&1 <<'PY'
import sys, torch
linked = dict(line.split(None, 1) for line in open(sys.argv[1]).read().splitlines() if " " in line)
cuda, cudnn = linked.get("cuda", "0").strip(), linked.get("cudnn", "0").strip()
have_cuda = torch.version.cuda or "none"
have_cudnn = torch.backends.cudnn.version() or 0
print("machine: torch %s, CUDA %s, cuDNN %s" % (torch.__version__, have_cuda, have_cudnn))
want = [int(x) for x in cudnn.split(".")] + [0, 0]
want_number = want[0] * 10000 + want[1] * 100 + want[2]
bad = []
if have_cuda.split(".")[0] != cuda.split(".")[0]:
    bad.append("CUDA major %s, built for %s" % (have_cuda, cuda))
if have_cudnn // 10000 != want[0] or have_cudnn < want_number:
    bad.append("cuDNN %s, built against %s (needs the same major, at least that version)"
               % (have_cudnn, cudnn))
if bad:
    sys.exit("mismatch: " + "; ".join(bad))
PY
  then
    cat "$work/logs/versions.log"
    die "the machine's CUDA libraries do not match this build (above)"
  fi
  tee -a "$summary" < "$work/logs/versions.log"
  local missing
  missing=$( (LD_LIBRARY_PATH=$rlib ldd "$BUNDLE/bin/retort" "$BUNDLE"/lib/*.so*
              for d in ${libs//:/ }; do LD_LIBRARY_PATH=$rlib ldd "$d"/libcudnn*.so* 2>/dev/null; done) |
             grep 'not found' | sort -u | tr '\n' ' ')
  LD_LIBRARY_PATH=$rlib ldd "$BUNDLE/bin/retort" | grep -E 'cudnn|cublas|cudart' > "$work/logs/ldd.txt"
  [ -z "$missing" ] || die "libraries missing on this machine: $missing"

  # The tests know the source tree's fixtures and the retort binary by their paths on the build
  # machine: make those paths lead here.
  local src
  src=$(awk '$1 == "source" {print $2}' "$BUNDLE/versions.txt")
  if [ -n "$src" ] && [ "$src" != "$ROOT" ] && [ ! -e "$src" ]; then
    mkdir -p "$(dirname "$src")" && ln -s "$ROOT" "$src"
  fi
  mkdir -p "$ROOT/build-gpu/tools" && cp -f "$BUNDLE/bin/retort" "$ROOT/build-gpu/tools/retort"

  # A first smoke test: the device context (stream, cuBLAS and cuDNN handles) must come up.
  if ! (cd "$ROOT" && LD_LIBRARY_PATH=$rlib timeout 60 "$BUNDLE/tests/kernels_cuda_context_test" \
        > "$work/logs/smoke.log" 2>&1) ||
     grep -qE 'no CUDA (GPU|device)|built without CUDA' "$work/logs/smoke.log"; then
    tail -40 "$work/logs/smoke.log"
    note "smoke test (kernels_cuda_context_test) FAILED: the CUDA context does not come up"
    status=1
    finish
    return 1
  fi

  # 1. The tests: binaries with CUDA cases (all with TESTS=all), each under a timeout.
  if [[ $stages == *" tests "* ]]; then
    local failed=() skipped=() cut=() ran=0
    # The end-to-end training tests last: the kernel and op tests say more per second.
    for t in $(ls "$BUNDLE"/tests/* | grep -v training) $(ls "$BUNDLE"/tests/* | grep training); do
      local name log code limit=120
      name=$(basename "$t")
      if [ "${TESTS:-gpu}" != all ] && [[ $name != *cuda* ]] &&
         ! grep -qaE 'no CUDA (GPU|device)|built without CUDA' "$t"; then
        continue
      fi
      [[ $name == *training* ]] && limit=240
      if [ "$(left)" -lt $((limit + 30)) ]; then
        cut+=("$name")
        status=1
        continue
      fi
      log="$work/logs/test_$name.log"
      (cd "$ROOT" && LD_LIBRARY_PATH=$rlib timeout -k 5 "$limit" "$t" > "$log" 2>&1)
      code=$?
      ran=$((ran + 1))
      if [ $code -ne 0 ]; then
        failed+=("$name")
        note "FAILED $name (exit $code$([ $code -eq 124 ] && echo ', timed out'))"
        grep -m3 -B2 -A8 -E 'Failure|what\(\)|error:|Error' "$log" | head -40 | tee -a "$summary"
      fi
      # On a GPU machine no CUDA case may skip.
      if grep -qE 'no CUDA (GPU|device)|built without CUDA|CUDA was not built' "$log"; then
        skipped+=("$name")
        note "SKIPPED CUDA cases in $name: $(grep -m1 -E 'no CUDA (GPU|device)|without CUDA' "$log" | cut -c1-120)"
      fi
    done
    note "tests: $ran binaries run, failed: ${failed[*]:-none}; CUDA cases that skipped: ${skipped[*]:-none}; not run for time: ${cut[*]:-none}"
    [ ${#failed[@]} -eq 0 ] && [ ${#skipped[@]} -eq 0 ] || status=1
  fi

  # 2. The correctness gate: retort's step on the GPU against PyTorch's from the same weights.
  if [[ $stages == *" gate "* ]]; then
    if [ "$(left)" -lt 90 ]; then
      note "gate: skipped, $(left) s left"
      status=1
    else
      if ! LD_LIBRARY_PATH=$rlib timeout 120 "$BUNDLE/bin/step_bench" --device cuda \
          --workloads kd,resnet56 --batches 64 --precision fp32 --export-step "$work/gate" \
          > "$work/gate.log" 2>&1; then
        status=1
        note "gate: step_bench --export-step failed:"
        tail -3 "$work/gate.log" | tee -a "$summary"
      fi
      for d in "$work"/gate/*/; do
        [ -f "$d/expected.json" ] || continue
        # Deep nets at small batches are ill-conditioned: a tensor over the bound passes when it
        # is within 3x PyTorch's own fp32-vs-fp64 error (bench/README.md).
        timeout 120 python3 bench/torch_reference.py --check-step "$d" --device cuda --slack 3 \
            >> "$work/gate.log" 2>&1 || status=1
      done
      grep -E '^(check-step|after\.safetensors|  FAIL)|rror' "$work/gate.log" | head -20 | tee -a "$summary"
    fi
  fi

  # 3. The benchmark, interleaved trial by trial, then the table.
  local jr="$work/retort.jsonl" jt="$work/torch.jsonl"
  local steps=(--warmup 20 --steps 50 --min-seconds 1)
  if [[ $stages == *" bench "* ]]; then
    for ((i = 1; i <= trials; ++i)); do
      if [ "$(left)" -lt 100 ]; then
        note "bench: stopped before round $i: $(left) s left"
        break
      fi
      LD_LIBRARY_PATH=$rlib timeout $(($(left) - 20)) "$BUNDLE/bin/step_bench" --device cuda \
          --workloads "$workloads" --batches "$batches" --precision "$precision" --trials 1 \
          "${steps[@]}" --json "$jr" >> "$work/logs/bench.log" 2>&1
      local code=$?
      if [ $code -ne 0 ]; then
        note "bench: step_bench failed (exit $code) in round $i:"
        tail -5 "$work/logs/bench.log" | tee -a "$summary"
        status=1
        break
      fi
      timeout $(($(left) - 10)) python3 bench/torch_reference.py --device cuda --workloads "$workloads" \
          --batches "$batches" --precision "$precision" --variants eager_nchw,eager_cl --trials 1 \
          "${steps[@]}" --json "$jt" >> "$work/logs/bench.log" 2>&1 || status=1
    done
    compare
  fi
  # 4. torch.compile for the KD step at batch 64 (the "KD >= best torch.compile" target).
  if [[ $stages == *" compile "* ]]; then
    if [ "$(left)" -lt 150 ]; then
      note "compile: skipped, $(left) s left"
    else
      if ! timeout $(($(left) - 15)) python3 bench/torch_reference.py --device cuda --workloads kd \
          --batches 64 --precision "$precision" --variants compile --trials 2 "${steps[@]}" \
          --json "$jt" > "$work/logs/compile.log" 2>&1; then
        status=1
        note "compile: failed or unavailable:"
        tail -3 "$work/logs/compile.log" | tee -a "$summary"
      fi
      compare
    fi
  fi
  finish
  return $status
}

# The table of bench/compare_gpu.py from the JSONL rows so far, and its target lines.
compare() {
  local files=()
  for f in "$work/retort.jsonl" "$work/torch.jsonl"; do [ -s "$f" ] && files+=("$f"); done
  if [ ${#files[@]} -eq 0 ]; then
    note "bench: no benchmark rows were written"
    status=1
    return
  fi
  python3 bench/compare_gpu.py "${files[@]}" --markdown-out "$work/table.md" \
      > "$work/logs/compare.log" 2>&1 || status=1
  grep -E 'met|NOT MET|not measured' "$work/logs/compare.log" | tee -a "$summary"
}

case "${1:-}" in
  bundle) bundle ;;
  run) run ;;
  *) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 2 ;;
esac
