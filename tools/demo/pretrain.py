#!/usr/bin/python3
"""Pretrains the demo base model: a small Llama (LlamaForCausalLM, GQA, tied embeddings) on the
demo corpus, on the CPU, and saves it in Hugging Face's format (config.json, model.safetensors).

The model is a plain torch module that computes what transformers' LlamaForCausalLM computes
(RMSNorm, rotate-half RoPE, grouped-query attention, SwiGLU), with HF's parameter names, so the
saved checkpoint loads in compass and in tools/reference/reference.py unchanged.

    pretrain.py --steps N [--threads 2] [--out testdata/demo/model] [--resume]
    pretrain.py --minutes M [...]   # train for M minutes of wall time, the schedule on the clock
    pretrain.py --measure 60        # train for 60 s from scratch and report tokens/s, save nothing
    pretrain.py --export DIR        # the last checkpoint, in HF format

Data: tools/demo/build/pretrain.u16 (tokenize.js over task.py's pretrain.jsonl), one record after
another, each <|begin_of_text|> ... <|end_of_text|>. 1% of the records (seeded) are held out as
"held-in" validation text: the same distribution as training, never trained on. The model is
also scored on the Ukrainian technical held-out text (a language and domain pretraining never
saw) and on the adaptation pool (unseen text from seen distributions).

AdamW (betas 0.9/0.95, weight decay 0.1 on matrices), linear warmup then cosine decay to 10% of
the peak learning rate, gradient clipping at 1. A checkpoint (model, optimizer, data position)
is written every --save-minutes to build/pretrain-ckpt.pt, so --resume after a kill loses little;
the loss curve goes to build/pretrain-loss.jsonl, one JSON line per --log-every steps.
"""

import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(HERE, "build")
DEVICE = None  # set from --device


def _preset_threads(argv):
    """--threads must reach OpenMP before torch is imported."""
    n = "2"
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
    os.environ["OMP_NUM_THREADS"] = n
    os.environ["MKL_NUM_THREADS"] = n


_preset_threads(sys.argv[1:])

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "tools", "reference"))
import safetensors_io  # noqa: E402

# The architecture. 256 hidden, 4 heads of 64, 2 key-value heads, 6 layers, SwiGLU of 768:
# 5.5M parameters with the 4096-token tied embedding.
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 4096,
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": True,
    "bos_token_id": 4093,
    "eos_token_id": 4094,
    "pad_token_id": 4095,
    "initializer_range": 0.02,
    "torch_dtype": "bfloat16",
}


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        v = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(v + self.eps))


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, d = c["hidden_size"], c["head_dim"]
        self.nh, self.nkv, self.d = c["num_attention_heads"], c["num_key_value_heads"], d
        self.input_layernorm = RMSNorm(h, c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(h, c["rms_norm_eps"])
        self.self_attn = nn.Module()
        self.self_attn.q_proj = nn.Linear(h, self.nh * d, bias=False)
        self.self_attn.k_proj = nn.Linear(h, self.nkv * d, bias=False)
        self.self_attn.v_proj = nn.Linear(h, self.nkv * d, bias=False)
        self.self_attn.o_proj = nn.Linear(self.nh * d, h, bias=False)
        self.mlp = nn.Module()
        self.mlp.gate_proj = nn.Linear(h, c["intermediate_size"], bias=False)
        self.mlp.up_proj = nn.Linear(h, c["intermediate_size"], bias=False)
        self.mlp.down_proj = nn.Linear(c["intermediate_size"], h, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        a = self.self_attn
        h = self.input_layernorm(x)
        q = a.q_proj(h).view(b, t, self.nh, self.d).transpose(1, 2)
        k = a.k_proj(h).view(b, t, self.nkv, self.d).transpose(1, 2)
        v = a.v_proj(h).view(b, t, self.nkv, self.d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        k = k.repeat_interleave(rep, dim=1).reshape(b * self.nh, t, self.d)
        v = v.repeat_interleave(rep, dim=1).reshape(b * self.nh, t, self.d)
        # scores = q k^T / sqrt(d) + causal mask, in one op (the T x T tensors dominate on a CPU)
        s = torch.baddbmm(mask, q.reshape(b * self.nh, t, self.d), k.transpose(1, 2), alpha=1 / math.sqrt(self.d))
        o = (s.softmax(-1) @ v).view(b, self.nh, t, self.d).transpose(1, 2).reshape(b, t, self.nh * self.d)
        x = x + a.o_proj(o)
        h = self.post_attention_layernorm(x)
        m = self.mlp
        return x + m.down_proj(F.silu(m.gate_proj(h)) * m.up_proj(h))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.model.layers = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])
        self.model.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        d = c["head_dim"]
        self.register_buffer("inv_freq", 1.0 / (c["rope_theta"] ** (torch.arange(0, d, 2).float() / d)), persistent=False)
        std = c["initializer_range"]
        for name, p in self.named_parameters():
            if p.dim() == 2:
                # GPT-2's scaling of the projections that write into the residual stream.
                scale = 1 / math.sqrt(2 * c["num_hidden_layers"]) if name.endswith(("o_proj.weight", "down_proj.weight")) else 1
                nn.init.normal_(p, 0.0, std * scale)

    def forward(self, ids):
        b, t = ids.shape
        pos = torch.arange(t, dtype=torch.float32, device=ids.device)
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        mask = torch.full((t, t), float("-inf"), device=ids.device).triu(1)
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        x = self.model.norm(x)
        return x @ self.model.embed_tokens.weight.t()  # tied lm_head


def load_stream(path):
    with open(path, "rb") as f:
        data = f.read()
    return torch.frombuffer(bytearray(data), dtype=torch.int16).to(torch.int64) & 0xFFFF


def split_docs(stream, bos):
    starts = (stream == bos).nonzero().flatten().tolist() + [len(stream)]
    return [stream[starts[i]:starts[i + 1]] for i in range(len(starts) - 1)]


@torch.no_grad()
def mean_nll(model, docs, seq):
    """Mean negative log-likelihood per predicted token over whole documents (cut into seq windows)."""
    model.eval()
    total, n = 0.0, 0
    for d in docs:
        for s in range(0, len(d) - 1, seq):
            w = d[s:s + seq + 1]
            if len(w) < 2:
                continue
            logits = model(w[None, :-1].to(DEVICE))
            total += F.cross_entropy(logits[0], w[1:].to(DEVICE), reduction="sum").item()
            n += len(w) - 1
    model.train()
    return total / max(n, 1), n


def lr_at(step, progress, args):
    """Linear warmup over --warmup steps, then cosine decay to 10% as progress goes from 0 to 1."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def save_hf(model, out, dtype):
    os.makedirs(out, exist_ok=True)
    cfg = dict(CONFIG)
    cfg["torch_dtype"] = {torch.bfloat16: "bfloat16", torch.float32: "float32"}[dtype]
    tensors = {name: p.detach().to(dtype).contiguous() for name, p in model.named_parameters()}
    path = os.path.join(out, "model.safetensors")
    safetensors_io.save(tensors, path + ".tmp", metadata={"format": "pt"})
    os.replace(path + ".tmp", path)
    with open(os.path.join(out, "config.json.tmp"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    os.replace(os.path.join(out, "config.json.tmp"), os.path.join(out, "config.json"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=0, help="train this many steps (the schedule's length)")
    ap.add_argument("--minutes", type=float, default=0,
                    help="instead of --steps: train for this much wall time, the schedule running on the clock")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-minutes", type=float, default=4)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--measure", type=float, default=0, help="train this many seconds, report tokens/s, save nothing")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--export", metavar="DIR", help="save the last checkpoint (build/pretrain-ckpt.pt) in HF format to DIR, then exit")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda where torch has it (the committed model: cpu)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--out", default=os.path.join(REPO, "testdata", "demo", "model"))
    args = ap.parse_args()
    if (args.steps > 0) == (args.minutes > 0) and not args.measure and not args.export:
        sys.exit("pretrain: give one of --steps and --minutes")
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    if args.export:
        model = Llama(CONFIG)
        state = torch.load(os.path.join(BUILD, "pretrain-ckpt.pt"), map_location="cpu")
        model.load_state_dict(state["model"])
        save_hf(model, args.export, {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype])
        print(f"pretrain: step {state['step']} saved to {args.export}", file=sys.stderr)
        return

    stream = load_stream(os.path.join(BUILD, "pretrain.u16"))
    docs = split_docs(stream, CONFIG["bos_token_id"])
    g = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(docs), generator=g).tolist()
    n_val = len(docs) // 100
    val = [docs[i] for i in order[:n_val]]
    train = torch.cat([docs[i] for i in order[n_val:]])
    windows = (len(train) - 1) // args.seq
    print(f"pretrain: {len(docs)} records, {len(train)} training tokens ({windows} windows of {args.seq}), "
          f"{n_val} held-in validation records", file=sys.stderr)

    model = Llama(CONFIG).to(DEVICE)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"pretrain: {n_params} parameters", file=sys.stderr)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    # The data order: a seeded permutation of the windows, repeated as needed.
    perm = torch.randperm(windows, generator=torch.Generator().manual_seed(args.seed + 1))
    step, elapsed_before = 0, 0.0
    ckpt = os.path.join(BUILD, "pretrain-ckpt.pt")
    log_path = os.path.join(BUILD, "pretrain-loss.jsonl")
    if args.resume and os.path.exists(ckpt):
        state = torch.load(ckpt, map_location=DEVICE)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed_before = state["step"], state["elapsed"]
        print(f"pretrain: resumed at step {step}", file=sys.stderr)
    elif not args.measure:
        open(log_path, "w").close()

    start = time.time()
    last_save = start
    tokens_per_step = args.batch * args.seq
    def progress(step, elapsed):
        if args.minutes:
            return elapsed / (args.minutes * 60)
        return (step - args.warmup) / max(1, args.steps - args.warmup)

    elapsed = elapsed_before
    while (step < args.steps) if args.steps else (elapsed < args.minutes * 60 or args.measure):
        idx = [perm[(step * args.batch + i) % windows].item() for i in range(args.batch)]
        batch = torch.stack([train[i * args.seq:i * args.seq + args.seq + 1] for i in idx])
        lr = lr_at(step, progress(step, elapsed), args)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = batch.to(DEVICE)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        opt.step()
        step += 1
        now = time.time()
        elapsed = elapsed_before + now - start
        if args.measure:
            if now - start >= args.measure:
                print(f"pretrain: measured {step} steps in {now - start:.1f} s: "
                      f"{step * tokens_per_step / (now - start):.0f} tokens/s, loss {loss.item():.3f}", file=sys.stderr)
                return
            continue
        if step % args.log_every == 0:
            rec = {"step": step, "tokens": step * tokens_per_step, "loss": round(loss.item(), 4), "lr": lr,
                   "grad_norm": round(gnorm, 3), "elapsed_s": round(elapsed, 1)}
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            rate = (step * tokens_per_step) / max(elapsed, 1e-9)
            print(f"pretrain: step {step} loss {loss.item():.3f} lr {lr:.2e} {rate:.0f} tok/s, "
                  f"{elapsed / 60:.1f} min, {100 * min(1.0, progress(step, elapsed)):.0f}%", file=sys.stderr, flush=True)
        if now - last_save >= args.save_minutes * 60:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed},
                       ckpt + ".tmp")
            os.replace(ckpt + ".tmp", ckpt)
            last_save = now

    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    save_hf(model, args.out, dtype)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed}, ckpt)
    print(f"pretrain: saved {args.out} after {step} steps, {elapsed / 60:.1f} min of training", file=sys.stderr)

    # Perplexity, with the weights as saved (rounded to the checkpoint's dtype).
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).to(torch.float32))
    heldout = split_docs(load_stream(os.path.join(BUILD, "heldout-uk.u16")), CONFIG["bos_token_id"])
    pool = split_docs(load_stream(os.path.join(BUILD, "pool.u16")), CONFIG["bos_token_id"])
    report = {"steps": step, "tokens": step * tokens_per_step, "train_minutes": round(elapsed / 60, 1),
              "parameters": n_params, "dtype": args.dtype}
    # The first records of each (all of them would take many minutes on a busy CPU).
    for name, d in (("held-in validation", val[:100]), ("uk technical held-out", heldout[:100]), ("adaptation pool", pool[:100])):
        nll, n = mean_nll(model, d, args.seq)
        report[name] = {"nll": round(nll, 4), "perplexity": round(math.exp(nll), 2), "tokens": n}
        print(f"pretrain: {name}: {n} tokens, nll {nll:.3f}, perplexity {math.exp(nll):.1f}", file=sys.stderr)
    with open(os.path.join(BUILD, "pretrain-eval.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
