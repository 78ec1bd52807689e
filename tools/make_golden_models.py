# Golden fixtures from PyTorch for tests/nn/golden_model_test.cpp: a whole-model training step.
"""Writes the whole-model golden fixtures that tests/nn/golden_model_test.cpp checks retort against.

Run from the repository root with Debian's Python and its python3-torch package (CPU torch), after
building retort's weight exporter:

    cmake --build build --target retort_export_weights
    /usr/bin/python3 tools/make_golden_models.py    # writes tests/fixtures/model_*.safetensors
    /usr/bin/python3 tools/make_golden_models.py --exporter PATH [OUT_DIR]

For each model (resnet8 and wrn_16_2 of spec/models.md) the script
  1. runs retort_export_weights, which writes retort's own freshly initialised state dict (PyTorch
     names) for a fixed seed;
  2. builds the same model here (RepDistiller's definitions, written out below, with global average
     pooling instead of AvgPool2d(8)) and loads that file with load_state_dict(strict=True), so
     every name and shape retort writes must be the ones torch expects;
  3. in float64, for one fixed batch: logits in training mode (batch statistics), the mean
     cross-entropy, its gradient for every parameter, the BN running statistics after that step,
     and then the logits in evaluation mode (which use those updated statistics).

The fixture holds the initial state, the batch and the results. Weights are float32 (what retort
initialises in) and the batch is rounded to float32, so retort's float32 run sees exactly the
float64 run's inputs. To keep wrn_16_2's fixture near a megabyte (0.7 M parameters), its "compact"
storage differs in two ways, both marked by the key names:
  * a parameter with more than QUANTISE_ABOVE elements is stored as uint8 codes q and a power-of-two
    scale s ("init_q.NAME", "init_scale.NAME"), and the model runs on w = (q - 128) * s, values
    both sides hold exactly in float32 and float64. These are retort's initial weights rounded to
    8 bits, not retort's weights bit for bit.
  * a gradient with more than FULL_GRAD_MAX elements is stored as its 2-norm ("grad_norm.NAME")
    and its values at GRAD_SAMPLES fixed random flat indices ("grad_index.NAME" int32,
    "grad_sample.NAME" float64); every other gradient is stored whole ("grad.NAME").

Deterministic: fixed seeds, one CPU thread, and a deterministic exporter, so running the script
twice writes identical files (with the same torch version, recorded in the metadata).
"""

import argparse
import json
import math
import os
import struct
import subprocess
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

from make_golden import f32_exact, save_safetensors

GENERATOR = "tools/make_golden_models.py"
BATCH = 4
QUANTISE_ABOVE = 4096
FULL_GRAD_MAX = 4096
GRAD_SAMPLES = 512

# (fixture name, model, init seed, batch seed, classes, compact storage)
CASES = [
    ("model_resnet8", "resnet8", 11, 111, 100, False),
    ("model_wrn_16_2", "wrn_16_2", 12, 112, 100, True),
]

ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "I64": torch.int64, "I32": torch.int32,
             "U8": torch.uint8}


def load_safetensors(path):
    """Reads a safetensors file: (name -> tensor in header order, metadata)."""
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + length].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    base = 8 + length
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        flat = torch.frombuffer(bytearray(data[base + begin:base + end]),
                                dtype=ST_DTYPES[info["dtype"]])
        tensors[name] = flat.reshape(info["shape"]).clone()
    return tensors, metadata


# --- RepDistiller models/resnet.py ----------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class ResNet(nn.Module):
    def __init__(self, depth, filters, in_channels, num_classes):
        super().__init__()
        n = (depth - 2) // 6
        self.in_planes = filters[0]
        self.conv1 = nn.Conv2d(in_channels, filters[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters[0])
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(filters[1], n, 1)
        self.layer2 = self._make_layer(filters[2], n, 2)
        self.layer3 = self._make_layer(filters[3], n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # the reference's AvgPool2d(8) on 32x32 inputs
        self.fc = nn.Linear(filters[3], num_classes)

    def _make_layer(self, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.in_planes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.in_planes, planes, stride, downsample)]
        self.in_planes = planes
        layers += [BasicBlock(planes, planes, 1, None) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(self.avgpool(out).flatten(1))


# --- RepDistiller models/wrn.py -------------------------------------------------------------------

class WideBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(
            in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x):
        # The reference: with a projection, both branches start from relu(bn1(x)).
        if self.equal_in_out:
            out = self.relu1(self.bn1(x))
        else:
            x = self.relu1(self.bn1(x))
            out = x
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return (x if self.equal_in_out else self.convShortcut(x)) + out


class NetworkBlock(nn.Module):
    def __init__(self, blocks, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
            for i in range(blocks)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth, widen_factor, in_channels, num_classes):
        super().__init__()
        n = (depth - 4) // 6
        c = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, c[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, c[0], c[1], 1)
        self.block2 = NetworkBlock(n, c[1], c[2], 2)
        self.block3 = NetworkBlock(n, c[2], c[3], 2)
        self.bn1 = nn.BatchNorm2d(c[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(c[3], num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))  # the reference's avg_pool2d(8)


MODELS = {
    "resnet8": lambda c, k: ResNet(8, [16, 16, 32, 64], c, k),
    "wrn_16_2": lambda c, k: WideResNet(16, 2, c, k),
}


# --- the fixture ----------------------------------------------------------------------------------

def quantise(w):
    """uint8 codes and a power-of-two scale with (codes - 128) * scale close to w."""
    scale = 2.0 ** math.ceil(math.log2(w.abs().max().item() / 127.0))
    codes = torch.clamp(torch.round(w.double() / scale) + 128, 1, 255).to(torch.uint8)
    return codes, torch.tensor(scale, dtype=torch.float64)


def export_weights(exporter, model_name, in_channels, classes, seed, directory):
    path = os.path.join(directory, model_name + ".safetensors")
    subprocess.run([exporter, "--model", model_name, "--in-channels", str(in_channels),
                    "--classes", str(classes), "--seed", str(seed), "--out", path],
                   check=True, stdout=subprocess.DEVNULL)
    return load_safetensors(path)


def make_case(out_dir, exporter, fixture, model_name, seed, batch_seed, classes, compact):
    in_channels = 3
    with tempfile.TemporaryDirectory() as directory:
        state, exported = export_weights(exporter, model_name, in_channels, classes, seed,
                                         directory)
    assert exported["model"] == model_name and exported["seed"] == str(seed), exported
    model = MODELS[model_name](in_channels, classes)
    model.load_state_dict(state, strict=True)  # retort's names and shapes, as torch wants them
    assert list(model.state_dict().keys()) == list(state.keys()), "state-dict order differs"

    tensors = {}
    parameters = dict(model.named_parameters())
    for name, value in state.items():
        if compact and name in parameters and value.numel() > QUANTISE_ABOVE:
            codes, scale = quantise(value)
            tensors["init_q." + name] = codes
            tensors["init_scale." + name] = scale
            with torch.no_grad():
                parameters[name].copy_((codes.double() - 128) * scale)
        else:
            tensors["init." + name] = value
    model.double()

    generator = torch.Generator().manual_seed(batch_seed)
    x = f32_exact(torch.randn(BATCH, in_channels, 32, 32, generator=generator,
                              dtype=torch.float64))
    labels = torch.randint(0, classes, (BATCH,), generator=generator, dtype=torch.int64)
    tensors["x"] = x.to(torch.float32)  # exact: x holds float32 values
    tensors["labels"] = labels

    model.train()
    logits_train = model(x)
    loss = F.cross_entropy(logits_train, labels)
    loss.backward()
    tensors["logits_train"] = logits_train
    tensors["loss"] = loss
    sample_generator = torch.Generator().manual_seed(batch_seed + 1)
    for name, p in model.named_parameters():
        grad = p.grad.reshape(-1)
        if compact and grad.numel() > FULL_GRAD_MAX:
            index = torch.randperm(grad.numel(), generator=sample_generator)[:GRAD_SAMPLES]
            index = index.sort().values
            tensors["grad_norm." + name] = grad.norm()
            tensors["grad_index." + name] = index.to(torch.int32)
            tensors["grad_sample." + name] = grad[index]
        else:
            tensors["grad." + name] = p.grad
    for name, b in model.named_buffers():
        tensors["after." + name] = b.clone()
    model.eval()
    with torch.no_grad():
        tensors["logits_eval"] = model(x)

    metadata = {
        "model": model_name,
        "in_channels": str(in_channels),
        "num_classes": str(classes),
        "seed": str(seed),
        "batch_size": str(BATCH),
        "compact": str(int(compact)),
        "generator": GENERATOR,
        "torch_version": torch.__version__,
        "weights_from": "retort_export_weights --model %s --in-channels %d --classes %d --seed %d"
                        % (model_name, in_channels, classes, seed),
        "steps": "train(); logits_train = model(x); loss = F.cross_entropy(logits_train, labels); "
                 "loss.backward(); after.* = buffers; eval(); logits_eval = model(x)",
    }
    path = os.path.join(out_dir, fixture + ".safetensors")
    save_safetensors(path, tensors, metadata)
    return path


def main():
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporter", default=os.path.join(root, "build", "tools",
                                                           "retort_export_weights"),
                        help="the retort_export_weights binary (default: build/tools/...)")
    parser.add_argument("out_dir", nargs="?", default=os.path.join(root, "tests", "fixtures"))
    args = parser.parse_args()
    if not os.path.isfile(args.exporter):
        parser.error("no exporter at %s: build the retort_export_weights target or pass --exporter"
                     % args.exporter)
    os.makedirs(args.out_dir, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for case in CASES:
        path = make_case(args.out_dir, args.exporter, *case)
        print("wrote %s (%d bytes)" % (os.path.normpath(path), os.path.getsize(path)))


if __name__ == "__main__":
    main()
