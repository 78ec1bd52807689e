# PyTorch CPU reference for bench/conv_bench.cpp: the same conv and GEMM shapes, timed the same way.
"""Times PyTorch's CPU convolutions (oneDNN) and GEMMs at the shapes of bench/conv_bench.cpp.

Run with Debian's interpreter and python3-torch (1.13, CPU):

    /usr/bin/python3 bench/torch_cpu_reference.py [--threads 2] [--min-time 0.5] [--json]

Every conv row is timed in NCHW and in channels_last: forward is F.conv2d, the two backward rows
are aten.convolution_backward with only the data (resp. filter) gradient requested, which is what
autograd calls. Rows carry the names conv_bench prints, so bench/compare_cpu.py can join them.
Protocol (the C++ side's): batch 64, uniform [-1, 1) inputs, a pool of 8 distinct input sets
rotated every iteration, at least --warmup seconds of warm-up, then iterations until --min-time
seconds have passed; the reported time is wall time / iterations.
"""

import argparse
import json
import re
import sys
import time

import torch
import torch.nn.functional as F

BATCH = 64
POOL = 8
CLASSES = 100

# (model, in_channels, size, out_channels, kernel, stride): as kConvCases in conv_bench.cpp.
CONV_CASES = [
    ("resnet56", 3, 32, 16, 3, 1),
    ("resnet56", 16, 32, 16, 3, 1),
    ("resnet56", 16, 32, 32, 3, 2),
    ("resnet56", 32, 16, 32, 3, 1),
    ("resnet56", 16, 32, 32, 1, 2),
    ("resnet56", 32, 16, 64, 3, 2),
    ("resnet56", 64, 8, 64, 3, 1),
    ("resnet56", 32, 16, 64, 1, 2),
    ("resnet8x4", 3, 32, 32, 3, 1),
    ("resnet8x4", 32, 32, 64, 3, 1),
    ("resnet8x4", 64, 32, 64, 3, 1),
    ("resnet8x4", 32, 32, 64, 1, 1),
    ("resnet8x4", 64, 32, 128, 3, 2),
    ("resnet8x4", 128, 16, 128, 3, 1),
    ("resnet8x4", 64, 32, 128, 1, 2),
    ("resnet8x4", 128, 16, 256, 3, 2),
    ("resnet8x4", 256, 8, 256, 3, 1),
    ("resnet8x4", 128, 16, 256, 1, 2),
]
LINEAR_CASES = [("resnet56", 64), ("resnet8x4", 256)]
DIRECTIONS = ["fwd", "bwd_data", "bwd_filter"]


def conv_label(c_in, size, c_out, kernel, stride):
    return f"s{stride}_{c_in}x{size}x{size}_k{kernel}_o{c_out}"


def out_size(size, kernel, stride):
    pad = kernel // 2
    return (size + 2 * pad - kernel) // stride + 1


def conv_macs(c_in, size, c_out, kernel, stride):
    o = out_size(size, kernel, stride)
    return BATCH * c_out * o * o * c_in * kernel * kernel


def pool(*shape, memory_format=torch.contiguous_format):
    """POOL distinct tensors, uniform in [-1, 1): never zeros."""
    return [(torch.rand(*shape) * 2 - 1).contiguous(memory_format=memory_format)
            for _ in range(POOL)]


def time_rotating(body, warmup, min_time):
    """Seconds per call of body(slot), slot rotating over the pool, after `warmup` seconds."""
    slot, start = 0, time.perf_counter()
    while True:
        body(slot)
        slot = (slot + 1) % POOL
        if time.perf_counter() - start >= warmup and slot >= 2:
            break
    iterations, start = 0, time.perf_counter()
    while True:
        body(slot)
        slot = (slot + 1) % POOL
        iterations += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / iterations


def wanted(pattern, names):
    return any(pattern.search(name) for name in names)


def conv_rows(pattern, layouts):
    for model, c_in, size, c_out, kernel, stride in CONV_CASES:
        label = conv_label(c_in, size, c_out, kernel, stride)
        if not wanted(pattern, [f"conv_{d}/{model}/{label}" for d in DIRECTIONS]):
            continue
        pad = kernel // 2
        o = out_size(size, kernel, stride)
        flops = 2.0 * conv_macs(c_in, size, c_out, kernel, stride)
        for layout, fmt in (("nchw", torch.contiguous_format),
                            ("channels_last", torch.channels_last)):
            if layout not in layouts:
                continue
            x = pool(BATCH, c_in, size, size, memory_format=fmt)
            w = pool(c_out, c_in, kernel, kernel, memory_format=fmt)
            gy = pool(BATCH, c_out, o, o, memory_format=fmt)

            def forward(i):
                F.conv2d(x[i], w[i], None, stride, pad)

            def backward(mask):
                def body(i):
                    torch.ops.aten.convolution_backward(
                        gy[i], x[i], w[i], None, [stride, stride], [pad, pad], [1, 1],
                        False, [0, 0], 1, mask)
                return body

            bodies = {"fwd": forward,
                      "bwd_data": backward([True, False, False]),
                      "bwd_filter": backward([False, True, False])}
            for direction in DIRECTIONS:
                yield (f"conv_{direction}/{model}/{label}", layout, bodies[direction], flops)


def linear_rows(pattern):
    for model, features in LINEAR_CASES:
        suffix = f"{model}/{BATCH}x{features}_o{CLASSES}"
        tags = ["linear_fwd", "linear_bwd_data", "linear_bwd_filter"]
        if not wanted(pattern, [f"gemm/{tag}/{suffix}" for tag in tags]):
            continue
        x = pool(BATCH, features)
        w = pool(CLASSES, features)
        gy = pool(BATCH, CLASSES)
        flops = 2.0 * BATCH * features * CLASSES
        bodies = {"linear_fwd": lambda i: torch.mm(x[i], w[i].t()),
                  "linear_bwd_data": lambda i: torch.mm(gy[i], w[i]),
                  "linear_bwd_filter": lambda i: torch.mm(gy[i].t(), x[i])}
        for tag, body in bodies.items():
            yield (f"gemm/{tag}/{suffix}", "nchw", body, flops)


def im2col_gemm_rows(pattern):
    """The per-sample GEMMs of an im2col conv, as batched matmuls (torch's BLAS)."""
    for model, c_in, size, c_out, kernel, stride in CONV_CASES:
        label = conv_label(c_in, size, c_out, kernel, stride)
        names = [f"gemm/im2col_{d}/{model}/{label}" for d in DIRECTIONS]
        if kernel != 3 or not wanted(pattern, names):
            continue
        k, p = c_in * kernel * kernel, out_size(size, kernel, stride) ** 2
        col = pool(BATCH, k, p)
        w = pool(c_out, k)
        gy = pool(BATCH, c_out, p)
        flops = 2.0 * conv_macs(c_in, size, c_out, kernel, stride)
        bodies = {"fwd": lambda i: torch.matmul(w[i], col[i]),
                  "bwd_data": lambda i: torch.matmul(w[i].t(), gy[i]),
                  "bwd_filter": lambda i: torch.matmul(gy[i], col[i].transpose(1, 2)).sum(0)}
        for direction in DIRECTIONS:
            yield (f"gemm/im2col_{direction}/{model}/{label}", "nchw", bodies[direction], flops)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=0.5,
                        help="seconds of timed iterations per row (conv_bench's default)")
    parser.add_argument("--warmup", type=float, default=0.25, help="seconds of warm-up per row")
    parser.add_argument("--filter", default="", help="regex on row names, as --benchmark_filter")
    parser.add_argument("--layouts", default="nchw,channels_last")
    parser.add_argument("--im2col-gemm", action="store_true",
                        help="also time the im2col GEMM rows (slow here: Debian's torch calls "
                             "the reference netlib BLAS for matmul)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pattern = re.compile(args.filter)
    layouts = set(args.layouts.split(","))
    generators = [conv_rows(pattern, layouts), linear_rows(pattern)]
    if args.im2col_gemm:
        generators.append(im2col_gemm_rows(pattern))
    rows = []
    if not args.json:
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {BATCH}, "
              f"mkldnn {torch.backends.mkldnn.is_available()}", file=sys.stderr)
        print(f"{'name':<52} {'layout':<14} {'ms':>10} {'items/s':>10} {'GFLOP/s':>8}")
    with torch.no_grad():
        for generator in generators:
            for name, layout, body, flops in generator:
                if not pattern.search(name):
                    continue
                seconds = time_rotating(body, args.warmup, args.min_time)
                row = {"name": name, "layout": layout, "ms": seconds * 1e3,
                       "items_per_second": BATCH / seconds, "gflops": flops / seconds * 1e-9}
                rows.append(row)
                if not args.json:
                    print(f"{name:<52} {layout:<14} {row['ms']:>10.3f} "
                          f"{row['items_per_second']:>10.1f} {row['gflops']:>8.2f}", flush=True)
    if args.json:
        json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(),
                   "batch": BATCH, "rows": rows}, sys.stdout, indent=1)
        print()


if __name__ == "__main__":
    main()
