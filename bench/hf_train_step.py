#!/usr/bin/env python3
"""HF transformers + PEFT doing the LoRA training step that the gpu suite of
`compass bench` (cgo/gpubench.go) times for compass, on the same GPU in the
same run: Llama-3.1-8B's exact config with random bf16 weights, LoRA r=16
(alpha 32) on all seven projections with float32 LoRA parameters (as compass
keeps them), one sequence of 2048 tokens, forward + loss + backward +
torch.optim.AdamW on the LoRA parameters. Prints one JSON line and appends
it to OUT.jsonl.

Usage: python3 hf_train_step.py llama-3.1-8b.json OUT.jsonl (compass bench writes it to a temporary folder)
"""
import json
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    config_path, out_path = sys.argv[1], sys.argv[2]
    cfg = LlamaConfig.from_json_file(config_path)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # build the 8B model in bf16 directly on the GPU
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                             target_modules=targets, task_type="CAUSAL_LM"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.data = p.data.float()
    opt = torch.optim.AdamW(trainable, lr=1e-4)

    T = 2048
    ids = torch.randint(0, cfg.vocab_size, (1, T), device="cuda")

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]
    # MFU with the usual estimate for a frozen base: forward 2N and backward
    # (activation gradients only) 2N FLOPs per token, N = non-embedding params.
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name and "lora_" not in name)
    peak = 989e12  # H100 SXM dense bf16; the GPU name is in the record
    record = {
        "suite": "gpu-train", "case": "Llama-3.1-8B config, LoRA r=16 all 7 projections, seq 2048, batch 1",
        "impl": "hf-transformers+peft", "gpu": torch.cuda.get_device_name(),
        "tokens_per_s": T / sec, "seconds_per_step": sec, "mfu_vs_989tflops": 4 * n * T / sec / peak,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(),
        "torch": torch.__version__,
    }
    line = json.dumps(record)
    print(line, flush=True)
    with open(out_path, "a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()
