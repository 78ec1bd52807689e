# Golden fixtures from PyTorch for tests/engine/golden_test.cpp, written as safetensors files.
"""Writes the PyTorch golden fixtures that tests/engine/golden_test.cpp checks retort against.

Run from the repository root with Debian's Python and its python3-torch package (CPU torch):

    /usr/bin/python3 tools/make_golden.py            # writes tests/fixtures/*.safetensors
    /usr/bin/python3 tools/make_golden.py OUT_DIR    # writes somewhere else

Each fixture is one case in one safetensors file, written by hand here (struct + json; the
`safetensors` package is not needed). Everything is float64 except the int64 labels. Inputs are
rounded to values that float32 holds exactly, so retort's float32 path sees the same inputs as the
float64 one and only its arithmetic differs. Gradients are those of sum(y * r) for a stored random
r (or of the loss itself for the losses). The metadata holds the op, its hyper-parameters, the
exact PyTorch call and the list of outputs the test must reproduce.

Deterministic: a fixed seed per case and one CPU thread, so running it twice writes identical
files (with the same torch version, which is recorded in the metadata).
"""

import json
import os
import struct
import sys

import torch
import torch.nn.functional as F

DTYPES = {
    torch.float64: ("F64", "d"),
    torch.float32: ("F32", "f"),
    torch.int64: ("I64", "q"),
    torch.int32: ("I32", "i"),
    torch.uint8: ("U8", "B"),
}


def save_safetensors(path, tensors, metadata):
    """Writes `tensors` (name -> tensor, in order) and string `metadata` in safetensors format."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        code, fmt = DTYPES[tensor.dtype]
        values = tensor.reshape(-1).tolist()
        blob = struct.pack("<%d%s" % (len(values), fmt), *values)
        header[name] = {
            "dtype": code,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data section starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for blob in blobs:
            out.write(blob)
    os.replace(tmp, path)


def f32_exact(t):
    """Rounds to the nearest float32 value, kept in float64."""
    return t.to(torch.float32).to(torch.float64)


def randn(*shape, scale=1.0, shift=0.0):
    return f32_exact(torch.randn(*shape, dtype=torch.float64) * scale + shift)


def leaf(t):
    return t.clone().requires_grad_(True)


class Writer:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.written = []

    def case(self, name, op, call, inputs, outputs, **params):
        metadata = {
            "op": op,
            "torch_call": call,
            "outputs": ",".join(outputs),
            "generator": "tools/make_golden.py",
            "torch_version": torch.__version__,
        }
        metadata.update({k: str(v) for k, v in params.items()})
        tensors = dict(inputs)
        for key, value in outputs.items():
            assert key not in tensors, key
            tensors[key] = value
        path = os.path.join(self.out_dir, name + ".safetensors")
        save_safetensors(path, tensors, metadata)
        self.written.append(path)


def conv2d_case(w, name, seed, x_shape, w_shape, stride, padding, groups, bias):
    torch.manual_seed(seed)
    x = leaf(randn(*x_shape))
    weight = leaf(randn(*w_shape, scale=0.5))
    b = leaf(randn(w_shape[0])) if bias else None
    y = F.conv2d(x, weight, b, stride=stride, padding=padding, groups=groups)
    r = randn(*y.shape)
    (y * r).sum().backward()
    inputs = {"x": x, "w": weight, "r": r}
    outputs = {"y": y, "grad_x": x.grad, "grad_w": weight.grad}
    if bias:
        inputs["b"] = b
        outputs["grad_b"] = b.grad
    call = "F.conv2d(x, w, %s, stride=%d, padding=%d, groups=%d)" % (
        "b" if bias else "None", stride, padding, groups)
    w.case(name, "conv2d", call, inputs, outputs, stride=stride, padding=padding, groups=groups)


def conv2d_cases(w):
    conv2d_case(w, "conv2d_plain", 101, (2, 3, 6, 5), (4, 3, 3, 3), 1, 1, 1, False)
    conv2d_case(w, "conv2d_stride2", 102, (2, 3, 7, 6), (5, 3, 3, 3), 2, 1, 1, False)
    conv2d_case(w, "conv2d_depthwise", 103, (2, 4, 6, 7), (4, 1, 3, 3), 1, 1, 4, False)
    conv2d_case(w, "conv2d_projection", 104, (2, 4, 7, 6), (6, 4, 1, 1), 2, 0, 1, False)
    conv2d_case(w, "conv2d_bias", 105, (2, 3, 5, 6), (4, 3, 3, 3), 1, 1, 1, True)


def batch_norm_case(w, name, seed, x_shape, training):
    torch.manual_seed(seed)
    channels = x_shape[1]
    x = leaf(randn(*x_shape, scale=2.0, shift=0.5))
    weight = leaf(randn(channels, scale=0.5, shift=1.0))
    bias = leaf(randn(channels, scale=0.5))
    running_mean = randn(channels, scale=0.3)
    running_var = f32_exact(torch.rand(channels, dtype=torch.float64) + 0.5)
    inputs = {"x": x, "weight": weight, "bias": bias,
              "running_mean": running_mean.clone(), "running_var": running_var.clone()}
    momentum, eps = 0.1, 1e-5
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training=training,
                     momentum=momentum, eps=eps)
    r = randn(*y.shape)
    (y * r).sum().backward()
    inputs["r"] = r
    outputs = {"y": y, "grad_x": x.grad, "grad_weight": weight.grad, "grad_bias": bias.grad}
    if training:
        outputs["running_mean_out"] = running_mean
        outputs["running_var_out"] = running_var
    call = ("F.batch_norm(x, running_mean, running_var, weight, bias, training=%s, "
            "momentum=0.1, eps=1e-05)" % training)
    w.case(name, "batch_norm", call, inputs, outputs, training=int(training), momentum=momentum,
           eps=eps)


def batch_norm_cases(w):
    batch_norm_case(w, "batch_norm_train", 201, (4, 3, 3, 5), True)
    batch_norm_case(w, "batch_norm_train_2d", 202, (6, 4), True)
    batch_norm_case(w, "batch_norm_eval", 203, (4, 3, 3, 5), False)


def pool_case(w, name, seed, op, x_shape, kernel, stride, padding, ceil_mode,
              count_include_pad=True):
    torch.manual_seed(seed)
    x = leaf(randn(*x_shape))
    if op == "max_pool2d":
        y = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode)
        call = "F.max_pool2d(x, %d, %d, %d, ceil_mode=%s)" % (kernel, stride, padding, ceil_mode)
    else:
        y = F.avg_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode,
                         count_include_pad=count_include_pad)
        call = "F.avg_pool2d(x, %d, %d, %d, ceil_mode=%s, count_include_pad=%s)" % (
            kernel, stride, padding, ceil_mode, count_include_pad)
    r = randn(*y.shape)
    (y * r).sum().backward()
    w.case(name, op, call, {"x": x, "r": r}, {"y": y, "grad_x": x.grad}, kernel=kernel,
           stride=stride, padding=padding, ceil_mode=int(ceil_mode),
           count_include_pad=int(count_include_pad))


def pool_cases(w):
    pool_case(w, "max_pool2d_k3s2p1", 301, "max_pool2d", (2, 3, 7, 6), 3, 2, 1, False)
    pool_case(w, "max_pool2d_ceil", 302, "max_pool2d", (2, 2, 6, 7), 3, 2, 0, True)
    pool_case(w, "avg_pool2d_k2", 303, "avg_pool2d", (2, 3, 6, 4), 2, 2, 0, False)
    pool_case(w, "avg_pool2d_k3s2p1", 304, "avg_pool2d", (2, 2, 7, 6), 3, 2, 1, False)
    pool_case(w, "avg_pool2d_exclude_pad", 305, "avg_pool2d", (2, 2, 7, 6), 3, 2, 1, False,
              count_include_pad=False)
    pool_case(w, "avg_pool2d_ceil", 306, "avg_pool2d", (2, 2, 6, 5), 3, 2, 1, True)
    pool_case(w, "avg_pool2d_ceil_exclude_pad", 307, "avg_pool2d", (2, 2, 6, 5), 3, 2, 1, True,
              count_include_pad=False)

    torch.manual_seed(308)
    x = leaf(randn(2, 3, 7, 5))
    y = F.adaptive_avg_pool2d(x, (3, 2))
    r = randn(*y.shape)
    (y * r).sum().backward()
    w.case("adaptive_avg_pool2d_7x5_to_3x2", "adaptive_avg_pool2d",
           "F.adaptive_avg_pool2d(x, (3, 2))", {"x": x, "r": r}, {"y": y, "grad_x": x.grad},
           out_h=3, out_w=2)


def softmax_cases(w):
    for i, (op, fn) in enumerate((("softmax", F.softmax), ("log_softmax", F.log_softmax))):
        for j, temperature in enumerate((1, 4)):
            torch.manual_seed(401 + 2 * i + j)
            x = leaf(randn(4, 10, scale=3.0))
            y = fn(x / temperature, dim=1)
            r = randn(*y.shape)
            (y * r).sum().backward()
            call = "F.%s(x / %d, dim=1)" % (op, temperature)
            w.case("%s_T%d" % (op, temperature), op, call, {"x": x, "r": r},
                   {"y": y, "grad_x": x.grad}, temperature=temperature)


def cross_entropy_case(w):
    torch.manual_seed(501)
    logits = leaf(randn(6, 10, scale=2.0))
    labels = torch.tensor([3, 0, 9, 3, 5, 7], dtype=torch.int64)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    w.case("cross_entropy_mean", "cross_entropy", "F.cross_entropy(logits, labels)",
           {"logits": logits, "labels": labels}, {"loss": loss, "grad_logits": logits.grad})


def kd_case(w, name, student, teacher, temperature):
    student = leaf(student)
    t = temperature
    # RepDistiller's DistillKL, verbatim.
    loss = F.kl_div(F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1),
                    reduction="batchmean") * t * t
    loss.backward()
    call = ("F.kl_div(F.log_softmax(student / T, dim=1), F.softmax(teacher / T, dim=1), "
            "reduction='batchmean') * T * T")
    w.case(name, "kd_loss", call, {"student": student, "teacher": teacher},
           {"loss": loss, "grad_student": student.grad}, temperature=temperature)


def kd_cases(w):
    torch.manual_seed(601)
    kd_case(w, "kd_loss_T4", randn(8, 10, scale=3.0), randn(8, 10, scale=3.0), 4)
    torch.manual_seed(602)
    kd_case(w, "kd_loss_T20", randn(8, 10, scale=3.0), randn(8, 10, scale=3.0), 20)
    # Logits around +-1000: softmax must subtract the row max. Exact ties within a row (also at
    # the max) and between student and teacher; some probabilities underflow to exactly 0.
    torch.manual_seed(603)
    sign = torch.where(torch.rand(6, 10) < 0.5, -1.0, 1.0).to(torch.float64)
    student = f32_exact(sign * 1000 + torch.randint(-8, 9, (6, 10)).to(torch.float64) * 0.5)
    teacher = f32_exact(-sign * 1000 + torch.randint(-8, 9, (6, 10)).to(torch.float64) * 0.5)
    student[0, :] = 1000.0
    student[1, 2] = student[1, 7] = student[1].max() + 1.0
    teacher[2] = student[2]
    teacher[3, :] = -1000.0
    teacher[4, 0] = teacher[4, 5] = 1000.0 + 4.0
    kd_case(w, "kd_loss_extreme", student, teacher, 4)


def kd_objective_case(w):
    # RepDistiller's whole KD step loss for --distill kd -r 0.1 -a 0.9: gamma*CE + alpha*DistillKL.
    torch.manual_seed(701)
    student = leaf(randn(8, 10, scale=3.0))
    teacher = randn(8, 10, scale=3.0)
    labels = torch.tensor([1, 0, 9, 4, 4, 7, 2, 5], dtype=torch.int64)
    t = 4.0
    kd = F.kl_div(F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1),
                  reduction="batchmean") * t * t
    loss = 0.1 * F.cross_entropy(student, labels) + 0.9 * kd
    loss.backward()
    call = "0.1 * F.cross_entropy(student, labels) + 0.9 * DistillKL(T=4)(student, teacher)"
    w.case("kd_objective_T4", "kd_objective", call,
           {"student": student, "teacher": teacher, "labels": labels},
           {"loss": loss, "grad_student": student.grad}, temperature=4, gamma=0.1, alpha=0.9)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    w = Writer(out_dir)
    conv2d_cases(w)
    batch_norm_cases(w)
    pool_cases(w)
    softmax_cases(w)
    cross_entropy_case(w)
    kd_cases(w)
    kd_objective_case(w)
    total = sum(os.path.getsize(p) for p in w.written)
    print("wrote %d fixtures (%d bytes) to %s" % (len(w.written), total,
                                                  os.path.normpath(out_dir)))


if __name__ == "__main__":
    main()
