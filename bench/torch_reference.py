#!/usr/bin/env python3
# PyTorch side of the GPU training-step benchmark (spec/benchmarks.md) and its correctness gate.
"""PyTorch reference for retort's GPU step benchmark (spec/benchmarks.md).

Workloads (CIFAR-100 shapes: 3x32x32 input, 100 classes; models of spec/models.md):
  kd        teacher resnet32x4 forward (eval, no grad) + student resnet8x4 forward/backward/SGD,
            loss 0.1*CE + 0.9*KL(T=4) as RepDistiller computes it (sum-KL / batch * T^2);
            metric: student images/s
  MODEL     forward/backward/SGD of one model of models.md, e.g. resnet56, wrn_40_2
SGD: lr 0.05, momentum 0.9, weight decay 5e-4, fused or foreach where this torch has it.

Variants: eager_nchw, eager_cl (channels_last model and inputs), compile (torch.compile default)
and compile_max (mode="max-autotune"); the compiled variants compile the forward + loss, NCHW,
dynamic=False. A variant this torch or device cannot run is a row with status "unavailable".

    /usr/bin/python3 bench/torch_reference.py --device cpu --batches 4 --warmup 1 --steps 2 \\
        --min-seconds 0 --trials 2                       # smoke test without a GPU
    python3 bench/torch_reference.py --json /tmp/gpu.jsonl   # on the GPU machine
    python3 bench/torch_reference.py --check-step DIR    # correctness gate (see check_step)

Timing per variant: build + the first SETUP_STEPS steps (compile, autotune, cudnn.benchmark
search, CUDA-graph recording) are `setup_s`; then --warmup steps; then --trials trials, variants
interleaved, each trial max(--steps, enough steps for --min-seconds) steps between two CUDA
events (time.perf_counter on the CPU). Rows and JSONL fields: see bench/README.md.
"""

import argparse
import copy
import gc
import inspect
import json
import math
import os
import statistics
import sys
import time
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
# The repository's PyTorch definitions of RepDistiller's models and its safetensors reader.
from make_golden_models import ResNet, WideResNet, load_safetensors  # noqa: E402

NUM_CLASSES = 100
IN_CHANNELS = 3
IMAGE_SIZE = 32
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4
KD_TEACHER, KD_STUDENT = "resnet32x4", "resnet8x4"
KD_TEMPERATURE, KD_CE_WEIGHT, KD_KL_WEIGHT = 4.0, 0.1, 0.9
SETUP_STEPS = 3  # compile on the 1st call; CUDA-graph trees warm up on the 1st, record on the 2nd
VARIANTS = ["eager_nchw", "eager_cl", "compile", "compile_max"]
PRECISIONS = ["tf32", "fp32"]
TOLERANCE = {"fp32": 1e-4, "tf32": 1e-3}  # the gate's relative error bound, spec/benchmarks.md
ROW_KEYS = ["engine", "variant", "workload", "batch", "precision", "device", "status", "reason",
            "images_per_s", "images_per_s_min", "images_per_s_max", "ms_per_step", "tflops",
            "peak_mem_mib", "kernels_per_step", "setup_s", "trials"]

X1, X4 = [16, 16, 32, 64], [32, 64, 128, 256]
# name -> (constructor, parameters, MACs in millions): spec/models.md section 4.4.
ZOO = {
    "resnet8": (lambda: ResNet(8, X1, IN_CHANNELS, NUM_CLASSES), 83_892, 12.51),
    "resnet14": (lambda: ResNet(14, X1, IN_CHANNELS, NUM_CLASSES), 181_108, 26.66),
    "resnet20": (lambda: ResNet(20, X1, IN_CHANNELS, NUM_CLASSES), 278_324, 40.82),
    "resnet32": (lambda: ResNet(32, X1, IN_CHANNELS, NUM_CLASSES), 472_756, 69.13),
    "resnet44": (lambda: ResNet(44, X1, IN_CHANNELS, NUM_CLASSES), 667_188, 97.44),
    "resnet56": (lambda: ResNet(56, X1, IN_CHANNELS, NUM_CLASSES), 861_620, 125.75),
    "resnet110": (lambda: ResNet(110, X1, IN_CHANNELS, NUM_CLASSES), 1_736_564, 253.16),
    "resnet8x4": (lambda: ResNet(8, X4, IN_CHANNELS, NUM_CLASSES), 1_233_540, 177.07),
    "resnet32x4": (lambda: ResNet(32, X4, IN_CHANNELS, NUM_CLASSES), 7_433_860, 1083.04),
    "wrn_16_1": (lambda: WideResNet(16, 1, IN_CHANNELS, NUM_CLASSES), 180_916, 26.66),
    "wrn_16_2": (lambda: WideResNet(16, 2, IN_CHANNELS, NUM_CLASSES), 703_284, 101.12),
    "wrn_40_1": (lambda: WideResNet(40, 1, IN_CHANNELS, NUM_CLASSES), 569_780, 83.29),
    "wrn_40_2": (lambda: WideResNet(40, 2, IN_CHANNELS, NUM_CLASSES), 2_255_156, 327.61),
}


# --- models ---------------------------------------------------------------------------------------

def init_weights(model):
    """The reference initialisation of models.md 4.1 (ResNet) and 4.2 (WRN)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if isinstance(model, WideResNet):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan))
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and isinstance(model, WideResNet):
            nn.init.zeros_(m.bias)


def build_model(name):
    model = ZOO[name][0]()
    init_weights(model)
    return model


def count_model(model):
    """(learnable parameters, conv + linear MACs per 3x32x32 image) by forward hooks."""
    macs = 0

    def hook(module, inputs, output):
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            macs += module.weight.numel() * output.shape[2] * output.shape[3]
        else:
            macs += module.weight.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE))
    model.train(was_training)
    for h in handles:
        h.remove()
    return sum(p.numel() for p in model.parameters()), macs


def check_counts(names):
    """Prints each model's parameter and MAC counts beside models.md's; returns exact MACs."""
    exact, ok = {}, True
    for name in names:
        params, macs = count_model(ZOO[name][0]())
        want_params, want_mmacs = ZOO[name][1], ZOO[name][2]
        good = params == want_params and abs(macs / 1e6 - want_mmacs) < 0.006
        ok &= good
        print("model %-10s params %11s (models.md %11s)  MACs %9.2f M (models.md %9.2f M)  %s"
              % (name, f"{params:,}", f"{want_params:,}", macs / 1e6, want_mmacs,
                 "ok" if good else "MISMATCH"))
        exact[name] = macs
    if not ok:
        sys.exit("error: a model does not match spec/models.md; not benchmarking it")
    return exact


def workload_models(workload):
    """(trained model, teacher or None) of a workload name."""
    if workload == "kd":
        return KD_STUDENT, KD_TEACHER
    if workload in ZOO:
        return workload, None
    raise ValueError("unknown workload %r (kd or one of %s)" % (workload, ", ".join(ZOO)))


# --- one step -------------------------------------------------------------------------------------

def kd_loss(student_logits, teacher_logits, labels, temperature=KD_TEMPERATURE,
            ce_weight=KD_CE_WEIGHT, kl_weight=KD_KL_WEIGHT):
    """RepDistiller's KD objective: ce_weight * CE + kl_weight * KL(teacher || student) at T,
    the KL summed over classes and batch, divided by the batch and multiplied by T^2."""
    ce = F.cross_entropy(student_logits, labels)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, p_teacher, reduction="sum") * temperature ** 2
    return ce_weight * ce + kl_weight * kl / student_logits.shape[0]


def make_loss_fn(student, teacher, kd_options=None):
    """loss(images, labels) of one step: CE, or the KD objective with a no-grad teacher."""
    if teacher is None:
        def loss_fn(images, labels):
            return F.cross_entropy(student(images), labels)
    else:
        options = kd_options or {}

        def loss_fn(images, labels):
            with torch.no_grad():
                teacher_logits = teacher(images)
            return kd_loss(student(images), teacher_logits, labels, **options)
    return loss_fn


def renamed(fn, name):
    """fn with a code object of its own, so each compiled variant has its own dynamo cache."""
    code = fn.__code__.replace(co_name=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


_SGD_CHOICE = {}


def sgd_implementation(device):
    """'fused', 'foreach' or 'for-loop': the fastest SGD this torch runs on `device` (probed)."""
    if device.type in _SGD_CHOICE:
        return _SGD_CHOICE[device.type]
    accepted = inspect.signature(torch.optim.SGD.__init__).parameters
    choice = "for-loop"
    for name in ("fused", "foreach"):
        if name not in accepted or (name == "fused" and device.type != "cuda"):
            continue
        try:
            probe = torch.zeros(4, device=device, requires_grad=True)
            probe.grad = torch.ones(4, device=device)
            opt = torch.optim.SGD([probe], lr=0.1, momentum=0.9, weight_decay=1e-4, **{name: True})
            opt.step()
            opt.step()
            choice = name
            break
        except (TypeError, RuntimeError, ValueError):
            continue
    _SGD_CHOICE[device.type] = choice
    return choice


def make_sgd(params, device, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY):
    impl = sgd_implementation(device)
    extra = {} if impl == "for-loop" else {impl: True}
    return torch.optim.SGD(list(params), lr=lr, momentum=momentum, weight_decay=weight_decay,
                           **extra)


def has_flag(backend, name):
    """hasattr for torch.backends objects, some of which raise AssertionError on unknown names."""
    try:
        getattr(backend, name)
        return True
    except (AttributeError, AssertionError, RuntimeError):
        return False


def set_precision(precision, legacy=False):
    """TF32 on or off for cuBLAS and cuDNN. Torch versions with the fp32_precision flags get only
    those (they reject a mix of the legacy allow_tf32 flags and the new ones); older ones, and
    every version when `legacy` (torch.compile: Inductor in torch 2.9-2.11 still reads the legacy
    flags and raises on the new ones), get allow_tf32 and set_float32_matmul_precision."""
    tf32 = precision == "tf32"
    if not legacy and has_flag(torch.backends.cuda.matmul, "fp32_precision"):
        value = "tf32" if tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = value
        for backend in (torch.backends.cudnn, getattr(torch.backends.cudnn, "conv", None),
                        getattr(torch.backends.cudnn, "rnn", None)):
            if backend is not None and has_flag(backend, "fp32_precision"):
                backend.fp32_precision = value
        return
    if hasattr(torch, "set_float32_matmul_precision"):
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_line(error, limit=300):
    """The error's type and the first two non-empty lines of its message, for a row's reason."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = "%s: %s" % (type(error).__name__, " | ".join(lines[:2]))
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --- a benchmark variant --------------------------------------------------------------------------

class Variant:
    """One (variant, workload, batch): its own model copies, optimizer, input pool and timings."""

    def __init__(self, name, workload, batch, device, args):
        self.name, self.workload, self.batch, self.device, self.args = (
            name, workload, batch, device, args)
        self.status, self.reason = "ok", ""
        self.setup_s = None
        self.peak_mem_mib = None
        self.kernels_per_step = None
        self.trial_ms = []  # ms per step, one per trial
        self.steps_per_trial = args.steps
        self.step_index = 0
        self.first_loss = self.loss = None
        self.mark_step = None

    def unavailable(self, reason):
        self.status, self.reason = "unavailable", reason
        self.release()

    def release(self):
        for attr in ("student", "teacher", "opt", "pool", "loss_fn"):
            if hasattr(self, attr):
                delattr(self, attr)

    def build(self, base_student, base_teacher):
        """Copies the shared initial weights to the device, compiles if asked, runs setup and
        warm-up, and picks the trial length. Records setup_s and peak memory."""
        cuda = self.device.type == "cuda"
        if cuda:
            synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        fmt = torch.channels_last if self.name == "eager_cl" else torch.contiguous_format
        self.student = copy.deepcopy(base_student).to(self.device, memory_format=fmt).train()
        self.teacher = None
        if base_teacher is not None:
            self.teacher = copy.deepcopy(base_teacher).to(self.device, memory_format=fmt).eval()
            self.teacher.requires_grad_(False)
        self.opt = make_sgd(self.student.parameters(), self.device)
        self.pool = make_pool(self.batch, self.args.pool, self.device,
                              self.args.seed * 1000 + self.batch, fmt)
        loss_fn = make_loss_fn(self.student, self.teacher)
        if self.name.startswith("compile"):
            mode = "max-autotune" if self.name == "compile_max" else None
            loss_fn = torch.compile(renamed(loss_fn, "%s_%s_b%d" % (self.name, self.workload,
                                                                      self.batch)),
                                    mode=mode, dynamic=False)
            compiler = getattr(torch, "compiler", None)
            self.mark_step = getattr(compiler, "cudagraph_mark_step_begin", None)
        self.loss_fn = loss_fn
        # Every variant starts from the same weights and batch: their first losses must agree.
        self.first_loss = float(self.step().detach().float().cpu())
        for _ in range(SETUP_STEPS - 2):
            self.step()
        synchronize(self.device)
        third = time.perf_counter()
        self.step()
        synchronize(self.device)
        done = time.perf_counter()
        self.setup_s = done - started
        estimate = done - third
        if self.args.warmup > 0:
            for _ in range(self.args.warmup):
                self.step()
            synchronize(self.device)
            estimate = (time.perf_counter() - done) / self.args.warmup
        if self.args.min_seconds > 0 and estimate > 0:
            self.steps_per_trial = max(self.args.steps,
                                       int(math.ceil(self.args.min_seconds / estimate * 1.05)))
        if cuda:
            peak = torch.cuda.max_memory_allocated(self.device) - before
            self.peak_mem_mib = peak / 2 ** 20

    def step(self):
        images, labels = self.pool[self.step_index % len(self.pool)]
        self.step_index += 1
        if self.mark_step is not None:
            self.mark_step()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(images, labels)
        loss.backward()
        self.opt.step()
        return loss

    def final_loss(self):
        """The loss of one more (untimed) step, read at once: a CUDA-graph replay would
        overwrite an older step's output."""
        return float(self.step().detach().float().cpu())

    def trial(self):
        n = self.steps_per_trial
        if self.device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            synchronize(self.device)
            start.record()
            for _ in range(n):
                self.step()
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
        else:
            started = time.perf_counter()
            for _ in range(n):
                self.step()
            ms = (time.perf_counter() - started) * 1e3
        self.trial_ms.append(ms / n)

    def count_kernels(self, steps=5):
        """CUDA kernels (memcpy/memset excluded) per step, from torch.profiler."""
        from torch.profiler import ProfilerActivity, profile
        synchronize(self.device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                self.step()
            synchronize(self.device)
        kernels = 0
        for event in prof.events():
            if event.device_type != torch.autograd.DeviceType.CUDA:
                continue
            if event.name.startswith(("Memcpy", "Memset")):
                continue
            kernels += 1
        self.kernels_per_step = kernels / steps


def make_pool(batch, size, device, seed, fmt):
    """`size` distinct random batches on the device: randn images, uniform labels."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    pool = []
    for _ in range(size):
        images = torch.randn(batch, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE, generator=generator,
                             device=device).contiguous(memory_format=fmt)
        labels = torch.randint(0, NUM_CLASSES, (batch,), generator=generator, device=device)
        pool.append((images, labels))
    return pool


def row_of(variant, precision, device_name, flops_per_image):
    row = dict.fromkeys(ROW_KEYS)
    row.update(engine="torch", variant=variant.name, workload=variant.workload,
               batch=variant.batch, precision=precision, device=device_name,
               status=variant.status, reason=variant.reason, trials=len(variant.trial_ms))
    if variant.status == "ok" and variant.trial_ms:
        rates = [variant.batch * 1e3 / ms for ms in variant.trial_ms]
        median = statistics.median(rates)
        row.update(images_per_s=median, images_per_s_min=min(rates),
                   images_per_s_max=max(rates), ms_per_step=statistics.median(variant.trial_ms),
                   tflops=flops_per_image * median / 1e12, peak_mem_mib=variant.peak_mem_mib,
                   kernels_per_step=variant.kernels_per_step, setup_s=variant.setup_s)
    return row


def precheck(name, device):
    """Why `name` cannot run here, or '' when it can."""
    if device.type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available to torch %s" % torch.__version__
    if name.startswith("compile") and not hasattr(torch, "compile"):
        return "torch %s has no torch.compile" % torch.__version__
    return ""


def run_group(workload, batch, args, device, macs):
    """All variants of one (workload, batch): build each, then interleave the trials."""
    trained, teacher_name = workload_models(workload)
    torch.manual_seed(args.seed)
    base_student = build_model(trained)
    base_teacher = build_model(teacher_name) if teacher_name else None
    variants = [Variant(name, workload, batch, device, args) for name in args.variants]
    for v in variants:
        reason = precheck(v.name, device)
        if reason:
            v.unavailable(reason)
            continue
        try:
            v.build(base_student, base_teacher)
        except Exception as error:  # noqa: BLE001 - any failure makes the row unavailable
            v.unavailable("setup failed: " + first_line(error))
            print("warning: %s %s b%d: %s" % (v.name, workload, batch, first_line(error)),
                  file=sys.stderr)
        gc.collect()
    for t in range(args.trials):
        for v in variants:
            if v.status != "ok":
                continue
            try:
                v.trial()
            except Exception as error:  # noqa: BLE001
                v.unavailable("trial %d failed: %s" % (t + 1, first_line(error)))
                v.trial_ms = []
    for v in variants:
        if v.status != "ok":
            continue
        if args.count_kernels and device.type == "cuda":
            try:
                v.count_kernels()
            except Exception as error:  # noqa: BLE001 - the count is optional
                print("warning: kernel count failed for %s: %s" % (v.name, first_line(error)),
                      file=sys.stderr)
        try:
            v.loss = loss = v.final_loss()
        except Exception as error:  # noqa: BLE001
            v.unavailable("final step failed: " + first_line(error))
            continue
        if not math.isfinite(loss):
            print("warning: %s %s b%d: last loss is %r" % (v.name, workload, batch, loss),
                  file=sys.stderr)
    built = [v for v in variants if v.first_loss is not None]
    if built:
        print("%s b%d: first-step loss %s; after the trials %s" % (
            workload, batch, ", ".join("%s %.6g" % (v.name, v.first_loss) for v in built),
            ", ".join("%s %.6g" % (v.name, v.loss) for v in built if v.loss is not None)))
        spread = max(v.first_loss for v in built) - min(v.first_loss for v in built)
        if spread > 1e-2 * max(abs(v.first_loss) for v in built):
            print("warning: %s b%d: the variants' first-step losses differ by %.3g"
                  % (workload, batch, spread), file=sys.stderr)
    flops = 6 * macs[trained] + (2 * macs[teacher_name] if teacher_name else 0)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" and \
        torch.cuda.is_available() else device.type
    rows = [row_of(v, args.precision, device_name, flops) for v in variants]
    steps = [v.steps_per_trial if v.status == "ok" else None for v in variants]
    for v in variants:
        v.release()
    del variants
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    if hasattr(torch, "_dynamo"):
        torch._dynamo.reset()
    return rows, steps


def format_rows(rows, steps):
    header = ("workload", "batch", "prec", "variant", "status", "img/s median [min-max]",
              "ms/step", "TFLOP/s", "peak MiB", "kernels", "setup s", "trials x steps")
    lines = []
    for r, n in zip(rows, steps):
        if r["status"] != "ok":
            lines.append((r["workload"], str(r["batch"]), r["precision"], r["variant"],
                          "unavailable: " + r["reason"], "", "", "", "", "", "", ""))
            continue

        def fmt(value, spec):
            return "-" if value is None else format(value, spec)

        lines.append((r["workload"], str(r["batch"]), r["precision"], r["variant"], "ok",
                      "%.0f [%.0f-%.0f]" % (r["images_per_s"], r["images_per_s_min"],
                                            r["images_per_s_max"]),
                      "%.3f" % r["ms_per_step"], "%.2f" % r["tflops"],
                      fmt(r["peak_mem_mib"], ".1f"), fmt(r["kernels_per_step"], ".0f"),
                      fmt(r["setup_s"], ".1f"), "%d x %d" % (r["trials"], n)))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(out)


def benchmark(args):
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    set_precision(args.precision, legacy=any(v.startswith("compile") for v in args.variants))
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    names = set()
    for w in args.workloads:
        trained, teacher = workload_models(w)
        names.update([trained] + ([teacher] if teacher else []))
    macs = check_counts(sorted(names))
    cuda_ok = device.type == "cuda" and torch.cuda.is_available()
    print("torch %s, device %s, precision %s, cudnn %s, SGD %s" % (
        torch.__version__, torch.cuda.get_device_name(device) if cuda_ok else device.type,
        args.precision,
        torch.backends.cudnn.version() if cuda_ok else "-",
        sgd_implementation(device) if cuda_ok or device.type == "cpu" else "-"))
    rows, steps = [], []
    for workload in args.workloads:
        for batch in args.batches:
            group, group_steps = run_group(workload, batch, args, device, macs)
            rows += group
            steps += group_steps
            if args.json:
                with open(args.json, "a") as out:
                    for r in group:
                        out.write(json.dumps(r) + "\n")
    print(format_rows(rows, steps))
    # A requested variant that could not run is a failure for the caller (scripts/gpu-check.sh).
    missing = sorted({r["variant"] for r in rows if r["status"] != "ok"})
    if missing:
        print("unavailable variants: %s" % ", ".join(missing), file=sys.stderr)
        return 2
    return 0


# --- the correctness gate -------------------------------------------------------------------------

def load_weights(model, path):
    """Copies a safetensors state dict (PyTorch names; any float dtype) into `model`; every
    parameter and BN statistic must be present (num_batches_tracked may be absent)."""
    state, _ = load_safetensors(path)
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    wrong = sorted(k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape))
    if unexpected or missing or wrong:
        sys.exit("error: %s does not fit %s: unexpected %s, missing %s, wrong shape %s"
                 % (path, type(model).__name__, unexpected[:5], missing[:5], wrong[:5]))
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value.to(own[name].dtype))


def relative_error(ours, reference):
    """max |ours - reference| / max |reference| (absolute when the reference is all zero)."""
    ours, reference = ours.double(), reference.double()
    scale = reference.abs().max().item() if reference.numel() else 0.0
    diff = (ours - reference).abs().max().item() if reference.numel() else 0.0
    return diff / scale if scale > 0 else diff


def one_step(directory, workload, expected, device, dtype):
    """Loads DIR's weights and batch and runs one training step in `dtype`: (loss, state after,
    state before). The teacher, if any, runs in eval mode without gradients."""
    trained, teacher_name = workload_models(workload)
    model = ZOO[trained][0]()
    load_weights(model, os.path.join(directory, "weights.safetensors"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model = model.to(device, dtype).train()
    teacher = None
    if teacher_name:
        teacher = ZOO[teacher_name][0]()
        load_weights(teacher, os.path.join(directory, "teacher.safetensors"))
        teacher = teacher.to(device, dtype).eval()
        teacher.requires_grad_(False)
    batch, _ = load_safetensors(os.path.join(directory, "batch.safetensors"))
    images = batch["images"].to(device, torch.float32).to(dtype)
    labels = batch["labels"].to(device, torch.int64)
    kd_options = {k: expected[k] for k in ("temperature", "ce_weight", "kl_weight")
                  if k in expected}
    loss_fn = make_loss_fn(model, teacher, kd_options)
    opt = torch.optim.SGD(model.parameters(), lr=expected["lr"], momentum=expected["momentum"],
                          weight_decay=expected["weight_decay"])
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(images, labels)
    loss.backward()
    opt.step()
    after = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return loss.item(), after, before, images.shape[0]


def check_step(args):
    """One PyTorch step from DIR's weights and batch, compared with DIR/expected.json's loss and,
    when present, DIR/after.safetensors. Returns the exit status (0 pass, 1 fail).

    The same step is also run in float64, and each compared tensor's error of torch itself
    (torch at the gate's precision vs float64) is printed: deep BN networks at small batches are
    ill-conditioned enough that two correct fp32 engines disagree by far more than 1e-4 on some
    tensors. With --slack K a tensor over the bound still passes when its error against torch, or
    its own error against float64, is at most K times torch's own error against float64."""
    directory = args.check_step
    with open(os.path.join(directory, "expected.json")) as f:
        expected = json.load(f)
    workload = expected["workload"]
    precision = expected.get("precision", args.precision)
    if precision not in TOLERANCE:
        sys.exit("error: precision %r is not supported by the gate (%s)"
                 % (precision, ", ".join(TOLERANCE)))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but CUDA is not available to torch %s (use --device cpu)"
                 % torch.__version__)
    set_precision(precision)
    tolerance = TOLERANCE[precision]
    trained, teacher_name = workload_models(workload)
    torch_loss, torch_after, initial, batch = one_step(directory, workload, expected, device,
                                                       torch.float32)
    exact_loss, exact_after, _, _ = one_step(directory, workload, expected, device,
                                             torch.float64)

    failed = False
    loss_error = abs(torch_loss - expected["loss"]) / max(abs(torch_loss), 1e-30)
    verdict = "ok" if loss_error <= tolerance else "FAIL"
    failed |= verdict != "ok"
    print("check-step %s (%s, %s, batch %d, %s): torch loss %.9g, expected %.9g, relative error "
          "%.3g (bound %g; torch vs float64 %.3g) %s"
          % (workload, trained + (" <- " + teacher_name if teacher_name else ""), precision,
             batch, device.type, torch_loss, expected["loss"], loss_error, tolerance,
             abs(torch_loss - exact_loss) / max(abs(exact_loss), 1e-30), verdict))

    after_path = os.path.join(directory, "after.safetensors")
    if not os.path.exists(after_path):
        print("no after.safetensors: updated weights not compared")
    else:
        after, _ = load_safetensors(after_path)
        worst, bad, slacked = (0.0, "-"), [], 0
        for name, value in after.items():
            if name not in torch_after:
                bad.append("%s (not in the torch model)" % name)
                continue
            error = relative_error(value, torch_after[name])
            own = relative_error(torch_after[name], exact_after[name])
            mine = relative_error(value, exact_after[name])
            update = (torch_after[name].double() - initial[name].double()).abs().max().item()
            detail = "rel %.3g, torch vs float64 %.3g, retort vs float64 %.3g, " \
                "update/max|value| %.3g" % (
                    error, own, mine,
                    update / max(torch_after[name].double().abs().max().item(), 1e-30))
            if args.verbose:
                print("  %-45s %s" % (name, detail))
            if error > worst[0]:
                worst = (error, name)
            if error <= tolerance:
                continue
            if args.slack > 0 and min(error, mine) <= args.slack * own:
                slacked += 1
                continue
            bad.append("%s %s" % (name, detail))
        unchecked = [k for k in torch_after if k not in after]
        print("after.safetensors: %d tensors compared, worst relative error %.3g (%s), bound %g, "
              "%d over%s; %d torch tensors not in the file%s"
              % (len(after), worst[0], worst[1], tolerance, len(bad) + slacked,
                 (" (%d within %gx torch's own float64 error)" % (slacked, args.slack))
                 if args.slack > 0 else "", len(unchecked),
                 (" (e.g. %s)" % unchecked[0]) if unchecked else ""))
        for line in bad:
            print("  FAIL " + line)
        failed |= bool(bad)
    print("check-step: %s" % ("FAIL" if failed else "PASS"))
    return 1 if failed else 0


# --- command line ---------------------------------------------------------------------------------

def comma_list(text):
    return [s.strip() for s in text.split(",") if s.strip()]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--workloads", type=comma_list, default=["kd", "resnet56"],
                   help="kd and/or model names of spec/models.md (default kd,resnet56)")
    p.add_argument("--batches", type=lambda s: [int(b) for b in comma_list(s)], default=[64, 128])
    p.add_argument("--precision", default="tf32", choices=PRECISIONS)
    p.add_argument("--variants", type=comma_list, default=list(VARIANTS),
                   help="comma list of " + ",".join(VARIANTS))
    p.add_argument("--warmup", type=int, default=50, help="steps after setup (default 50)")
    p.add_argument("--steps", type=int, default=200, help="minimum steps per trial (default 200)")
    p.add_argument("--min-seconds", type=float, default=2.0,
                   help="minimum seconds per trial, estimated from the warm-up (default 2)")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--pool", type=int, default=8, help="distinct batches rotated (>= 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--json", metavar="PATH", help="append one JSON object per row (JSONL)")
    p.add_argument("--count-kernels", action="store_true",
                   help="CUDA kernels per step from torch.profiler (after the trials)")
    p.add_argument("--check-step", metavar="DIR",
                   help="correctness gate: one step from DIR's weights, compared with DIR's "
                        "expected.json and after.safetensors")
    p.add_argument("--verbose", action="store_true", help="--check-step: every tensor's error")
    p.add_argument("--slack", type=float, default=0.0,
                   help="--check-step: a tensor over the bound passes when its error is at most "
                        "SLACK x torch's own error against float64 (default 0: off)")
    args = p.parse_args()
    if args.check_step:
        return check_step(args)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error("unknown variants %s (choose from %s)" % (unknown, ",".join(VARIANTS)))
    for w in args.workloads:
        try:
            workload_models(w)
        except ValueError as error:
            p.error(str(error))
    if args.pool < 8:
        p.error("--pool must be at least 8 (spec/benchmarks.md)")
    if args.steps < 1 or args.trials < 1 or args.warmup < 0:
        p.error("--steps and --trials must be >= 1, --warmup >= 0")
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
