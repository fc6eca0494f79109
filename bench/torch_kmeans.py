#!/usr/bin/env python3
"""One Lloyd iteration of k-means in PyTorch on the shape the gpu suite of
`compass bench` (cgo/gpubench.go) times compass's at: 1,000,000 points of
768 dimensions, 1024 centroids, on the same GPU in the same run. The
assignment is a matmul and an argmin, d = ||c||^2 - 2 x c^T (the points'
norms do not change the argmin), in float32 (TF32 off: PyTorch's default
for matmuls, the precision compass's split tensor-core kernel matches),
in TF32, and in bf16; the update is index_add_ of the points into their
clusters and a bincount. Each case reports the share of points it assigns
as the float32 case does.
Prints one JSON line per case and appends them to OUT.jsonl.

Usage: python3 torch_kmeans.py OUT.jsonl (compass bench writes it to a temporary folder)
"""
import json
import sys

import torch

N, D, K = 1_000_000, 768, 1024


def timed(fn, reps=5):
    """Median seconds per call over five runs of reps calls, by CUDA events."""
    for _ in range(2):  # warm-up
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    runs = []
    for _ in range(5):
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        runs.append(start.elapsed_time(end) / 1e3 / reps)
    return sorted(runs)[len(runs) // 2]


def assign(x, c):
    cn = (c.float() * c.float()).sum(1)
    return torch.addmm(cn.to(x.dtype), x, c.t(), beta=1, alpha=-2).argmin(1)


def update(x, a):
    sums = torch.zeros(K, D, device=x.device, dtype=torch.float32).index_add_(0, a, x)
    counts = torch.bincount(a, minlength=K)
    return sums / counts.clamp(min=1).unsqueeze(1)


def main():
    out_path = sys.argv[1]
    torch.manual_seed(0)
    x = torch.randn(N, D, device="cuda")
    c = torch.randn(K, D, device="cuda")
    xb, cb = x.bfloat16(), c.bfloat16()
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = assign(x, c)
    flops = 2 * N * K * D
    records = []
    for case, tf32, xs, cs in (("kmeans_assign_f32", False, x, c), ("kmeans_assign_tf32", True, x, c),
                               ("kmeans_assign_bf16", False, xb, cb)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        same = (assign(xs, cs) == ref).float().mean().item()
        sec = timed(lambda: assign(xs, cs))
        records.append({"bench": case, "us": sec * 1e6, "TFLOP_per_s": flops / sec / 1e12, "same_as_f32": same})
    torch.backends.cuda.matmul.allow_tf32 = False
    records.append({"bench": "kmeans_update_f32", "us": timed(lambda: update(x, ref)) * 1e6})
    with open(out_path, "a") as f:
        for r in records:
            r.update({"suite": "gpu-kmeans", "impl": "torch", "gpu": torch.cuda.get_device_name(),
                      "torch": torch.__version__, "shape": {"N": N, "D": D, "K": K}})
            line = json.dumps(r)
            print(line)
            f.write(line + "\n")


if __name__ == "__main__":
    main()
