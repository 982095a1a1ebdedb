"""The PyTorch side of benches/train_step.rs: DLDL-v2's TinyAgeNet / ThinAgeNet (VGG-16
layout with c = 16 / 32 base channels, conv 3x3 without bias + BatchNorm + ReLU, 2x2
max-pool, global average pool, one 101-bin head), one training step (forward, full-KL
loss, backward, Adam) and inference, on random data, 2 threads.

Usage: python benches/reference/train_step_torch.py BATCH SIZE BASE_CHANNELS [STEPS]
"""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

LAYOUT = [1, 1, 0, 2, 2, 0, 4, 4, 4, 0, 8, 8, 8, 0, 8, 8, 8, 0]  # 0 = max-pool


def network(base, bins=101):
    layers, channels = [], 3
    for units in LAYOUT:
        if units == 0:
            layers.append(nn.MaxPool2d(2, 2))
            continue
        out = units * base
        layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, bins))


def full_kl(logits, p, centres, floor=1e-3):
    logq = F.log_softmax(logits, -1)
    q = logq.exp()
    ld = (p * torch.log(p.clamp_min(1e-38)) - p * logq).sum(-1)
    mp = (p * centres).sum(-1)
    vp = (p * (centres - mp[:, None]) ** 2).sum(-1).clamp_min(floor)
    mq = (q * centres).sum(-1)
    vq = (q * (centres - mq[:, None]) ** 2).sum(-1).clamp_min(floor)
    ex = 0.5 * torch.log(vq / vp) + (vp + (mp - mq) ** 2) / (2 * vq) - 0.5
    la = logq[:, 1:] - torch.logsumexp(logq[:, 1:], -1, keepdim=True)
    lb = logq[:, :-1] - torch.logsumexp(logq[:, :-1], -1, keepdim=True)
    sm = 0.5 * ((la.exp() - lb.exp()) * (la - lb)).sum(-1)
    return (ld + ex + sm).mean()


if __name__ == "__main__":
    batch, size, base = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = network(base)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{sum(p.numel() for p in model.parameters())} parameters")
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)
    images = torch.rand(batch, 3, size, size) * 4 - 2
    centres = torch.arange(101.0)
    ages = torch.rand(batch) * 80 + 10
    p = torch.exp(-((centres[None] - ages[:, None]) ** 2) / (2 * 3.0**2))
    p = p / p.sum(-1, keepdim=True)

    def step():
        optimiser.zero_grad()
        loss = full_kl(model(images), p, centres)
        loss.backward()
        optimiser.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = (time.perf_counter() - start) / steps
    print(f"train step batch {batch} size {size}: {elapsed * 1e3:.1f} ms ({batch / elapsed:.1f} img/s)")
    model.eval()
    with torch.no_grad():
        model(images)
        start = time.perf_counter()
        for _ in range(steps):
            model(images)
        elapsed = (time.perf_counter() - start) / steps
    print(f"inference batch {batch} size {size}: {elapsed * 1e3:.1f} ms ({batch / elapsed:.1f} img/s)")
