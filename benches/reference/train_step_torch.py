"""The PyTorch side of benches/train_step.rs (CPU) and examples/step_timing.rs (CUDA):
DLDL-v2's TinyAgeNet / ThinAgeNet (VGG-16 layout with c = 16 / 32 base channels, conv 3x3
without bias + BatchNorm + ReLU, 2x2 max-pool, global average pool, one 101-bin head), one
training step (forward, full-KL loss, backward, Adam) and inference, on random data: on
the CPU with 2 threads, or on CUDA in eager mode, f32 or AMP bf16, optionally channels_last.

Usage: python benches/reference/train_step_torch.py BATCH SIZE BASE_CHANNELS [STEPS]
           [--cuda] [--amp-bf16] [--channels-last] [--threads=N]

On the CPU it runs on 2 threads unless --threads=N says otherwise.

On CUDA each timed loop ends with torch.cuda.synchronize(); the peak memory printed is
torch.cuda.max_memory_allocated / max_memory_reserved over the training steps.
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
    flags = {a.split("=")[0] for a in sys.argv[1:] if a.startswith("--")}
    options = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    batch, size, base = int(args[0]), int(args[1]), int(args[2])
    steps = int(args[3]) if len(args) > 3 else 5
    device = "cuda" if "--cuda" in flags else "cpu"
    amp = "--amp-bf16" in flags
    channels_last = "--channels-last" in flags
    if device == "cpu":
        torch.set_num_threads(int(options.get("threads", 2)))
    torch.manual_seed(0)
    model = network(base).to(device)
    images = torch.rand(batch, 3, size, size) * 4 - 2
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    images = images.to(device)
    print(f"torch {torch.__version__}, {device}"
          + (f" ({torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()})" if device == "cuda" else f", {torch.get_num_threads()} threads")
          + f", {'AMP bf16' if amp else 'f32'}{', channels_last' if channels_last else ''}, "
          f"{sum(p.numel() for p in model.parameters())} parameters")
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)
    centres = torch.arange(101.0, device=device)
    ages = torch.rand(batch, device=device) * 80 + 10
    p = torch.exp(-((centres[None] - ages[:, None]) ** 2) / (2 * 3.0**2))
    p = p / p.sum(-1, keepdim=True)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def forward(x):
        # AMP autocasts the convolutions and products to bf16; the loss runs in f32.
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            return model(x)

    def step():
        optimiser.zero_grad()
        loss = full_kl(forward(images).float(), p, centres)
        loss.backward()
        optimiser.step()

    for _ in range(3 if device == "cuda" else 1):
        step()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    elapsed = (time.perf_counter() - start) / steps
    print(f"train step batch {batch} size {size}: {elapsed * 1e3:.1f} ms ({batch / elapsed:.1f} img/s)")
    if device == "cuda":
        mib = 2**20
        print(f"peak memory: {torch.cuda.max_memory_allocated() / mib:.0f} MiB allocated, "
              f"{torch.cuda.max_memory_reserved() / mib:.0f} MiB reserved")
    model.eval()
    with torch.no_grad():
        for _ in range(3 if device == "cuda" else 1):
            forward(images)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            forward(images)
        sync()
        elapsed = (time.perf_counter() - start) / steps
    print(f"inference batch {batch} size {size}: {elapsed * 1e3:.1f} ms ({batch / elapsed:.1f} img/s)")
