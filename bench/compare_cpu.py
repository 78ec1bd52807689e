# Runs bench/conv_bench and bench/torch_cpu_reference.py in alternation and prints one comparison table.
"""Compare retort's CPU conv/GEMM kernels with PyTorch CPU, shape by shape (stdlib only).

    python3 bench/compare_cpu.py --chunked --rounds 3 --wait-idle 60 [--filter REGEX]

Each round runs the C++ binary (--benchmark_format=json) and the PyTorch script (--json) once per
chunk (everything, or with --chunked one conv shape / GEMM family), alternating which goes first,
so drift and other processes' load fall on both sides alike. A row's time is the minimum over
rounds (the least disturbed pass); "spread" is max/min over rounds of retort's time. Other
processes' CPU use during each pass (from /proc/stat minus the child's own CPU time) is printed,
so a disturbed run shows up as such.
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# How many times each conv shape occurs in one model (for the per-step totals). resnet56: 9
# BasicBlocks per stage; resnet8x4: 1.
OCCURRENCES = {
    "resnet56/s1_3x32x32_k3_o16": 1,
    "resnet56/s1_16x32x32_k3_o16": 18,
    "resnet56/s2_16x32x32_k3_o32": 1,
    "resnet56/s1_32x16x16_k3_o32": 17,
    "resnet56/s2_16x32x32_k1_o32": 1,
    "resnet56/s2_32x16x16_k3_o64": 1,
    "resnet56/s1_64x8x8_k3_o64": 17,
    "resnet56/s2_32x16x16_k1_o64": 1,
    "resnet8x4/s1_3x32x32_k3_o32": 1,
    "resnet8x4/s1_32x32x32_k3_o64": 1,
    "resnet8x4/s1_64x32x32_k3_o64": 1,
    "resnet8x4/s1_32x32x32_k1_o64": 1,
    "resnet8x4/s2_64x32x32_k3_o128": 1,
    "resnet8x4/s1_128x16x16_k3_o128": 1,
    "resnet8x4/s2_64x32x32_k1_o128": 1,
    "resnet8x4/s2_128x16x16_k3_o256": 1,
    "resnet8x4/s1_256x8x8_k3_o256": 1,
    "resnet8x4/s2_128x16x16_k1_o256": 1,
}
STEMS = ("s1_3x32x32_",)  # the stem's input needs no gradient: no backward-data in training

UNIT_TO_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}


def busy_jiffies():
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq + steal


def run_pass(command):
    """Runs command; returns (stdout, wall seconds, other processes' average busy cores)."""
    tick = os.sysconf("SC_CLK_TCK")
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, start = busy_jiffies(), time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    busy1, wall = busy_jiffies(), time.perf_counter() - start
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    foreign = max(0.0, (busy1 - busy0) / tick - child) / wall
    return result.stdout, wall, foreign


def wait_idle(limit):
    """Waits (up to `limit` s) until the CPUs are idle for one second; returns the wait."""
    tick, start = os.sysconf("SC_CLK_TCK"), time.perf_counter()
    while time.perf_counter() - start < limit:
        before = busy_jiffies()
        time.sleep(1.0)
        if (busy_jiffies() - before) / tick < 0.1:
            break
    return time.perf_counter() - start


def list_retort_rows(binary):
    """conv_bench's row names, without the suffixes Google Benchmark's --list_tests shows."""
    text = subprocess.run([binary, "--benchmark_list_tests"], stdout=subprocess.PIPE, text=True,
                          check=True).stdout
    return [line.split("/min_warmup_time")[0].split("/real_time")[0]
            for line in text.split()]


def chunks_of(names, chunked):
    """Groups of row names, one group per pass: everything, or one conv shape / GEMM family."""
    if not chunked:
        return [names]
    groups = {}
    for name in names:
        kind, _, rest = name.partition("/")
        # conv_fwd/resnet56/s1_... -> resnet56/s1_...; gemm/linear_fwd/... -> gemm/linear.
        key = rest if kind.startswith("conv_") else f"{kind}/{rest.split('_')[0]}"
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def parse_retort(text):
    rows = {}
    for b in json.loads(text)["benchmarks"]:
        if b.get("error_occurred"):
            print(f"retort: {b['name']}: {b.get('error_message')}", file=sys.stderr)
            continue
        rows[b["name"]] = (b["real_time"] * UNIT_TO_MS[b["time_unit"]], b.get("GFLOP"))
    return rows


def parse_torch(text):
    rows = {}
    for r in json.loads(text)["rows"]:
        rows[(r["name"], r["layout"])] = r["ms"]
    return rows


def fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "build-bench", "bench", "conv_bench"))
    parser.add_argument("--python", default="/usr/bin/python3", help="interpreter with torch")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--filter", default=".", help="regex on row names (both sides)")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds timed per row")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (retort's is fixed)")
    parser.add_argument("--torch-im2col-gemm", action="store_true",
                        help="also time torch's matmul at the im2col GEMM shapes (slow)")
    parser.add_argument("--save", help="directory to keep each pass's raw JSON in")
    parser.add_argument("--chunked", action="store_true",
                        help="one pass per conv shape (and per GEMM group) instead of one pass "
                             "per side: short passes interleave retort and torch more finely")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each pass, wait up to SECONDS for the machine to go idle")
    args = parser.parse_args()

    if args.save:
        os.makedirs(args.save, exist_ok=True)
    retort_runs = [{} for _ in range(args.rounds)]
    torch_runs = [{} for _ in range(args.rounds)]
    passes = []
    pattern = re.compile(args.filter)
    selected = [n for n in list_retort_rows(args.binary) if pattern.search(n)]
    chunks = chunks_of(selected, args.chunked)
    for r in range(args.rounds):
        for c, chunk in enumerate(chunks):
            # Names hold only [a-z0-9_/]; conv_bench matches its filter against the full name,
            # which goes on with "/min_warmup_time:...", hence the trailing "/".
            alternatives = "|".join(chunk)
            retort_cmd = [args.binary, "--benchmark_format=json",
                          f"--benchmark_filter=^({alternatives})/",
                          f"--benchmark_min_time={args.min_time}"]
            torch_cmd = [args.python, os.path.join(HERE, "torch_cpu_reference.py"), "--json",
                         f"--filter=^({alternatives})$", f"--min-time={args.min_time}",
                         f"--threads={args.threads}"]
            if args.torch_im2col_gemm:
                torch_cmd.append("--im2col-gemm")
            elif all(name.startswith("gemm/im2col_") for name in chunk):
                torch_cmd = None
            label = chunk[0] if len(chunk) == 1 else f"{len(chunk)} rows from {chunk[0]}"
            order = [("retort", retort_cmd), ("torch", torch_cmd)]
            if (r + c) % 2:
                order.reverse()
            for side, command in order:
                if command is None:
                    continue
                waited = wait_idle(args.wait_idle) if args.wait_idle > 0 else 0.0
                print(f"round {r + 1}/{args.rounds} chunk {c + 1}/{len(chunks)} {side} "
                      f"({label}) ...", file=sys.stderr, flush=True)
                text, wall, foreign = run_pass(command)
                passes.append((r + 1, c + 1, side, wall, foreign, waited))
                print(f"  {wall:.1f} s, other processes used {foreign:.2f} cores",
                      file=sys.stderr, flush=True)
                if args.save:
                    path = os.path.join(args.save, f"round{r + 1}_chunk{c + 1}_{side}.json")
                    with open(path, "w") as f:
                        f.write(text)
                if side == "retort":
                    retort_runs[r].update(parse_retort(text))
                else:
                    torch_runs[r].update(parse_torch(text))

    names = []
    for run in retort_runs:
        names += [n for n in run if n not in names]

    def best(values):
        """(min, max) of the rounds that produced the row, or (None, None)."""
        values = [v for v in values if v is not None]
        return (min(values), max(values)) if values else (None, None)

    print(f"date {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, "
          f"threads {args.threads}, batch 64, rounds {args.rounds}, min over rounds")
    print()
    print("| shape | retort ms | retort GFLOP/s | torch NCHW ms | torch CL ms | "
          "retort / best torch | retort spread |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    table = {}
    for name in names:
        retort_ms, retort_max = best(run[name][0] for run in retort_runs if name in run)
        flops_rate = max((run[name][1] or 0.0) for run in retort_runs if name in run)
        nchw, _ = best(run.get((name, "nchw")) for run in torch_runs)
        cl, _ = best(run.get((name, "channels_last")) for run in torch_runs)
        torch_best = min([v for v in (nchw, cl) if v is not None], default=None)
        ratio = retort_ms / torch_best if torch_best else None
        spread = retort_max / retort_ms if retort_ms else None
        table[name] = (retort_ms, nchw, cl)
        print(f"| {name} | {fmt(retort_ms)} | {fmt(flops_rate, 1)} | {fmt(nchw)} | {fmt(cl)} | "
              f"{fmt(ratio, 2)} | {fmt(spread, 2)} |")

    print()
    print("Conv time of one training step (forward + backward data + backward filter of every "
          "conv, times its occurrences; no backward data for the stem), ms:")
    print()
    print("| model | retort | torch NCHW | torch channels_last | retort / best torch |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for model in ("resnet56", "resnet8x4"):
        totals, complete = [0.0, 0.0, 0.0], True
        for shape, count in OCCURRENCES.items():
            if not shape.startswith(model + "/"):
                continue
            for direction in ("fwd", "bwd_data", "bwd_filter"):
                if direction == "bwd_data" and shape.split("/")[1].startswith(STEMS):
                    continue
                row = table.get(f"conv_{direction}/{shape}")
                if row is None or None in row:
                    complete = False
                    continue
                for i in range(3):
                    totals[i] += count * row[i]
        if not complete:
            print(f"| {model} | incomplete (rows missing from the filter or failed) | | | |")
            continue
        print(f"| {model} | {totals[0]:.1f} | {totals[1]:.1f} | {totals[2]:.1f} | "
              f"{totals[0] / min(totals[1], totals[2]):.2f} |")

    print()
    loads = [p[4] for p in passes]
    disturbed = [p for p in passes if p[4] > 0.2]
    print(f"{len(passes)} passes, {sum(p[3] for p in passes):.0f} s; other processes' CPU use "
          f"during a pass: mean {sum(loads) / len(loads):.2f}, max {max(loads):.2f} cores; "
          f"{len(disturbed)} passes above 0.2 cores:")
    for r, c, side, wall, foreign, waited in disturbed:
        print(f"- round {r} chunk {c} {side}: {wall:.1f} s, other load {foreign:.2f} cores")


if __name__ == "__main__":
    main()
