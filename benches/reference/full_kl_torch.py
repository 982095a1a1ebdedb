"""The PyTorch side of benches/loss.rs: the same losses on the same shapes (batch 128,
3 axes of 101 bins, f32, CPU, 2 threads), forward and forward+backward, timed per call.

Usage: python benches/reference/full_kl_torch.py [REPEATS]
"""
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
B, K, AXES = 128, 101, 3
centres = torch.arange(K, dtype=torch.float32)


def targets():
    rows = []
    for a in range(AXES):
        age = torch.tensor([10.0 + ((i * 37 + a * 11) % 80) for i in range(B)])
        p = torch.exp(-((centres[None] - age[:, None]) ** 2) / (2 * 3.0**2))
        rows.append(p / p.sum(-1, keepdim=True))
    return rows


def logits():
    out = []
    for a in range(AXES):
        i = torch.arange(B * K)
        v = ((i * 7919 + a * 104729) % 1000).float() / 250.0 - 2.0
        out.append(v.reshape(B, K).requires_grad_())
    return out


def full_kl_axis(z, p, floor=1e-3):
    logq = F.log_softmax(z, -1)
    q = logq.exp()
    ld = (p * torch.log(p.clamp_min(1e-38)) - p * logq).sum(-1)
    mu = (p * centres).sum(-1)
    d = centres[None] - mu[:, None]
    mp = (p * d).sum(-1)
    vp = (p * (d - mp[:, None]) ** 2).sum(-1).clamp_min(floor)
    mq = (q * d).sum(-1)
    vq = (q * (d - mq[:, None]) ** 2).sum(-1).clamp_min(floor)
    ex = 0.5 * torch.log(vq / vp) + (vp + (mp - mq) ** 2) / (2 * vq) - 0.5
    la = logq[:, 1:] - torch.logsumexp(logq[:, 1:], -1, keepdim=True)
    lb = logq[:, :-1] - torch.logsumexp(logq[:, :-1], -1, keepdim=True)
    sm = 0.5 * ((la.exp() - lb.exp()) * (la - lb)).sum(-1)
    return ld.mean() + ex.mean() + sm.mean()


def kl_axis(z, p):
    logq = F.log_softmax(z, -1)
    return (p * torch.log(p.clamp_min(1e-38)) - p * logq).sum(-1).mean()


def dldl_v2_axis(z, p, lam=1.0):
    logq = F.log_softmax(z, -1)
    ld = (p * torch.log(p.clamp_min(1e-38)) - p * logq).sum(-1)
    l1 = ((p * centres).sum(-1) - (logq.exp() * centres).sum(-1)).abs()
    return ld.mean() + lam * l1.mean()


def timed(fn, repeats):
    for _ in range(20):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


if __name__ == "__main__":
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    ps, zs = targets(), logits()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, axis_loss in [("full-kl", full_kl_axis), ("kl", kl_axis), ("dldl-v2", dldl_v2_axis)]:
        def forward():
            with torch.no_grad():
                return sum(axis_loss(z, p) for z, p in zip(zs, ps)).item()

        def forward_backward():
            for z in zs:
                z.grad = None
            total = sum(axis_loss(z, p) for z, p in zip(zs, ps))
            total.backward()
            return zs[0].grad.shape

        print(f"{name}/forward: {timed(forward, repeats) * 1e6:.1f} µs")
        print(f"{name}/forward_backward: {timed(forward_backward, repeats) * 1e6:.1f} µs")
