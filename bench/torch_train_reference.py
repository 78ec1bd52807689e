#!/usr/bin/env python3
"""PyTorch CPU reference for `retort train`: the same model, data, augmentation and recipe.

Trains a RepDistiller-style CIFAR ResNet (global average pooling, 1-channel stem for
Fashion-MNIST) with SGD 0.05 / momentum 0.9 / weight decay 5e-4, batch 64, random crop
(padding 4) + horizontal flip + normalisation, multi-step decay x0.1 at the milestones retort
uses by default (62.5%, 75%, 87.5% of the epochs, rounded, below the last epoch), and reports
test accuracy and training images/s per epoch. Run with Debian's python3-torch:

    /usr/bin/python3 bench/torch_train_reference.py --model resnet20 --epochs 3 --threads 2

Compare with: build/tools/retort train --model resnet20 --epochs 3 --threads 2
"""
import argparse
import gzip
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, count = struct.unpack(">II", data[:8])
    if magic == 0x803:
        rows, cols = struct.unpack(">II", data[8:16])
        return np.frombuffer(data, np.uint8, offset=16).reshape(count, 1, rows, cols)
    return np.frombuffer(data, np.uint8, offset=8).astype(np.int64)


class BasicBlock(nn.Module):
    def __init__(self, inp, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inp != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inp, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, depth, channels, in_channels, classes):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        layers, inp = [], channels[0]
        for planes, stride in [(channels[1], 1), (channels[2], 2), (channels[3], 2)]:
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(inp, planes, stride if b == 0 else 1))
                inp = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(channels[3], classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


DEPTHS = {"resnet8": 8, "resnet14": 14, "resnet20": 20, "resnet32": 32, "resnet56": 56}


def augment(images, generator):
    """Random crop with zero padding 4 and horizontal flip, then normalise (float32)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=generator)
    dx = torch.randint(0, 9, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(images)
    for i in range(n):
        crop = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return (out - MEAN) / STD


def milestones(epochs):
    out = []
    for fraction in (0.625, 0.75, 0.875):
        m = int(round(fraction * epochs))
        if 1 <= m < epochs and (not out or m > out[-1]):
            out.append(m)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20", choices=sorted(DEPTHS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    train_x = torch.from_numpy(read_idx(f"{ROOT}/train-images-idx3-ubyte.gz").astype(np.float32) / 255)
    train_y = torch.from_numpy(read_idx(f"{ROOT}/train-labels-idx1-ubyte.gz"))
    test_x = (torch.from_numpy(read_idx(f"{ROOT}/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255) - MEAN) / STD
    test_y = torch.from_numpy(read_idx(f"{ROOT}/t10k-labels-idx1-ubyte.gz"))

    model = ResNet(DEPTHS[args.model], [16, 16, 32, 64], 1, 10)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    marks = milestones(args.epochs)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.model}, milestones {marks}, "
          f"{'channels_last' if args.channels_last else 'NCHW'}")
    for epoch in range(1, args.epochs + 1):
        lr = args.lr * 0.1 ** sum(1 for m in marks if m < epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        order = torch.randperm(len(train_x), generator=gen)
        start, step_time, seen = time.time(), 0.0, 0
        for b in range(0, len(order), args.batch_size):
            idx = order[b:b + args.batch_size]
            x = augment(train_x[idx], gen).contiguous(memory_format=fmt)
            t0 = time.time()
            loss = F.cross_entropy(model(x), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step_time += time.time() - t0
            seen += len(idx)
        train_seconds = time.time() - start
        model.eval()
        correct = 0
        with torch.no_grad():
            for b in range(0, len(test_x), 256):
                x = test_x[b:b + 256].contiguous(memory_format=fmt)
                correct += (model(x).argmax(1) == test_y[b:b + 256]).sum().item()
        print(f"epoch {epoch} lr {lr:.4f} test acc {100.0 * correct / len(test_x):.2f}%  "
              f"train {seen / train_seconds:.0f} img/s (steps alone {seen / step_time:.0f} img/s)",
              flush=True)


if __name__ == "__main__":
    main()
