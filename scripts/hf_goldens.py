#!/usr/bin/env python3
"""hf_goldens.py: goldens from Hugging Face transformers and PEFT themselves.

    python3 scripts/hf_goldens.py FIXTURES_DIR OUT.safetensors

FIXTURES_DIR is what `go run ./scripts/tinyfixtures DIR` writes: one folder
per variant with model/ (config.json, model.safetensors), adapter/ (a PEFT
LoRA adapter) and inputs.json ({"input_ids", "labels"}, labels aligned with
positions, -100 ignored). For each variant this loads the checkpoint with
transformers (LlamaForCausalLM, Qwen2ForCausalLM or Phi3ForCausalLM, eager
attention, the checkpoint's dtype), the adapter with PEFT, and computes on
the CPU:

    NAME/logits     F32 [B, T, V]
    NAME/logprobs   F32 [B, T]   log-softmax at the label, 0 where ignored
    NAME/loss       F32 [1]      mean of -logprobs over counted positions
    NAME/grad/PEFT_NAME          d loss / d each LoRA parameter, named as
                                 PEFT saves it (base_model.model.model.
                                 layers.0.self_attn.q_proj.lora_A.weight)

all in one safetensors file (the device run returns at most 8 files), with
the library versions in its metadata. A variant that fails is reported and
skipped; the exit status is 1 if any failed.
"""
import json
import os
import sys
import traceback

import torch


def golden(fixture, name):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with open(os.path.join(fixture, "model", "config.json")) as f:
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(json.load(f).get("torch_dtype"), torch.float32)
    with open(os.path.join(fixture, "inputs.json")) as f:
        inputs = json.load(f)
    ids = torch.tensor(inputs["input_ids"], dtype=torch.long)
    labels = torch.tensor(inputs["labels"], dtype=torch.long)

    path = os.path.join(fixture, "model")
    try:  # transformers 5 names it dtype; 4.x torch_dtype
        base = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    except TypeError:
        base = AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, os.path.join(fixture, "adapter"), is_trainable=True)
    model.eval()  # no dropout (the adapters have none anyway)

    logits = model(input_ids=ids).logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    counted = labels != -100
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    logprobs = torch.where(counted, picked, torch.zeros_like(picked))
    loss = -logprobs.sum() / counted.sum()
    loss.backward()

    out = {
        f"{name}/logits": logits.detach().clone().contiguous(),
        f"{name}/logprobs": logprobs.detach().clone().contiguous(),
        f"{name}/loss": loss.detach().float().reshape(1).clone(),
    }
    grads = 0
    for pname, p in model.named_parameters():
        if not p.requires_grad or "lora_" not in pname:
            continue
        if p.grad is None:
            raise RuntimeError(f"{pname}: no gradient")
        saved = pname.replace(".default", "")  # PEFT's saved names drop the adapter name
        out[f"{name}/grad/{saved}"] = p.grad.detach().float().clone().contiguous()
        grads += 1
    print(f"{name}: loss {loss.item():.6f}, {grads} LoRA gradients, logits {tuple(logits.shape)}, dtype {dtype}", flush=True)
    return out


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    fixtures, dest = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    import peft
    import transformers
    from safetensors.torch import save_file

    tensors, failed = {}, []
    for name in sorted(os.listdir(fixtures)):
        if not os.path.isdir(os.path.join(fixtures, name)):
            continue
        try:
            tensors.update(golden(os.path.join(fixtures, name), name))
        except Exception:
            traceback.print_exc()
            print(f"{name}: FAILED", flush=True)
            failed.append(name)
    meta = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": "cpu",
        "attn_implementation": "eager",
        "fixtures": "go run ./scripts/tinyfixtures DIR",
        "failed": ",".join(failed),
    }
    save_file(tensors, dest, metadata=meta)
    print(f"wrote {len(tensors)} tensors to {dest}; {len(failed)} variant(s) failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
