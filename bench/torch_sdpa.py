#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention on the shape the gpu suite of
`compass bench` (cgo/gpubench.go) times attention at (Llama-3.1-8B's
layer: one sequence of 2048 tokens, 32 query heads, 8 key/value heads,
head dim 128, causal, bf16), with the flash backend forced, forward and
forward + backward, on the same GPU in the same run: the reference
compass's tensor-core attention is measured against. The backward's time
is forward + backward minus the forward.
Prints one JSON line per case and appends them to OUT.jsonl.

Usage: python3 torch_sdpa.py OUT.jsonl (compass bench writes it to a temporary folder)
"""
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

T, HQ, HKV, D = 2048, 32, 8, 128


def timed(fn, reps=20):
    """Median seconds per call over five runs of reps calls, by CUDA events."""
    for _ in range(3):  # warm-up
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


def main():
    out_path = sys.argv[1]
    torch.manual_seed(0)
    # [B, heads, T, D], as SDPA takes them; GQA by repeating K/V heads
    # (enable_gqa where this PyTorch has it).
    q = torch.randn(1, HQ, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, HKV, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, HKV, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dout = torch.randn(1, HQ, T, D, device="cuda", dtype=torch.bfloat16)

    gqa = "native"

    def attend():
        if gqa == "native":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return F.scaled_dot_product_attention(q, kr, vr, is_causal=True)

    # The flash backend takes GQA natively in recent PyTorch; else K/V heads
    # repeated beforehand (outside the timed calls, as leaves of their own).
    kr = vr = None
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        try:
            attend()
        except (TypeError, RuntimeError):
            gqa = "repeated"
            g = HQ // HKV
            kr = k.detach().repeat_interleave(g, 1).requires_grad_()
            vr = v.detach().repeat_interleave(g, 1).requires_grad_()

    def forward():
        with torch.no_grad():
            attend()

    def forward_backward():
        o = attend()
        o.backward(dout)

    flops_fwd = 2 * HQ * T * T * D  # causal: half of 4 * T^2 * D per head
    records = []
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        fwd = timed(forward)
        fwd_bwd = timed(forward_backward)
    for case, sec, flops in (("attention_forward_bf16", fwd, flops_fwd),
                             ("attention_backward_bf16", fwd_bwd - fwd, 2.5 * flops_fwd)):
        records.append({"suite": "gpu-kernels", "bench": case, "impl": "torch-sdpa-flash",
                        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                        "shape": {"T": T, "Hq": HQ, "Hkv": HKV, "D": D, "causal": True}, "gqa": gqa,
                        "us": sec * 1e6, "TFLOP_per_s": flops / sec / 1e12})
    with open(out_path, "a") as f:
        for r in records:
            line = json.dumps(r)
            print(line)
            f.write(line + "\n")


if __name__ == "__main__":
    main()
