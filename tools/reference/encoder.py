"""An independent PyTorch reference for the sentence encoders compass embeds with: XLMRobertaModel
and BertModel as Hugging Face transformers computes them (modeling_xlm_roberta.py,
modeling_bert.py; eager attention, eval mode), and e5's pooling. reference.py's `encode` and
`encode-bench` subcommands call it; README.md beside this file documents them.

Only the standard library, torch and safetensors_io.py are used.
"""

import json
import os
import time

import torch
import torch.nn.functional as F

import safetensors_io

# transformers' XLMRobertaConfig / BertConfig defaults for keys a config.json may leave out.
FAMILIES = {"xlm-roberta": {"pad_token_id": 1, "prefix": "roberta.",
                            "architectures": ["XLMRobertaModel", "XLMRobertaForMaskedLM"]},
            "bert": {"pad_token_id": 0, "prefix": "bert.", "architectures": ["BertModel", "BertForMaskedLM"]}}


class EncoderError(Exception):
    """Bad input: reference.py prints it as one line and exits 2."""


class EncoderConfig:
    def __init__(self, raw, path="config.json"):
        self.family = raw.get("model_type")
        if self.family not in FAMILIES:
            raise EncoderError(f"{path}: model_type {self.family!r} is not xlm-roberta or bert")
        archs = raw.get("architectures") or []
        if archs and not any(a in FAMILIES[self.family]["architectures"] for a in archs):
            raise EncoderError(f"{path}: architectures {archs}: not a {self.family} encoder")

        def need(key):
            if key not in raw:
                raise EncoderError(f"{path}: missing {key!r}")
            return raw[key]

        self.hidden = need("hidden_size")
        self.layers = need("num_hidden_layers")
        self.heads = need("num_attention_heads")
        self.intermediate = need("intermediate_size")
        self.vocab_size = need("vocab_size")
        self.max_positions = raw.get("max_position_embeddings", 512)
        self.type_vocab_size = raw.get("type_vocab_size", 2)
        self.eps = raw.get("layer_norm_eps", 1e-12)
        self.pad = raw.get("pad_token_id", FAMILIES[self.family]["pad_token_id"])
        if raw.get("hidden_act", "gelu") != "gelu":
            raise EncoderError(f"{path}: hidden_act {raw['hidden_act']!r} is not gelu")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise EncoderError(f"{path}: position_embedding_type {raw['position_embedding_type']!r} is not absolute")
        if self.hidden % self.heads:
            raise EncoderError(f"{path}: hidden_size {self.hidden} is not a multiple of {self.heads} heads")
        self.head_dim = self.hidden // self.heads


def expected_tensors(cfg):
    """{name: shape} of the tensors the forward pass reads (the pooler is not among them)."""
    h, i = cfg.hidden, cfg.intermediate
    spec = {"embeddings.word_embeddings.weight": [cfg.vocab_size, h],
            "embeddings.position_embeddings.weight": [cfg.max_positions, h],
            "embeddings.token_type_embeddings.weight": [cfg.type_vocab_size, h],
            "embeddings.LayerNorm.weight": [h], "embeddings.LayerNorm.bias": [h]}
    for n in range(cfg.layers):
        p = f"encoder.layer.{n}"
        for name, shape in [("attention.self.query", [h, h]), ("attention.self.key", [h, h]),
                            ("attention.self.value", [h, h]), ("attention.output.dense", [h, h]),
                            ("attention.output.LayerNorm", [h]), ("intermediate.dense", [i, h]),
                            ("output.dense", [h, i]), ("output.LayerNorm", [h])]:
            spec[f"{p}.{name}.weight"] = shape
            spec[f"{p}.{name}.bias"] = [shape[0]]
    return spec


def load_encoder(model_dir, dtype):
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path) as f:
            cfg = EncoderConfig(json.load(f), path)
    except (OSError, json.JSONDecodeError) as e:
        raise EncoderError(f"{path}: {e}") from None
    try:
        tensors = safetensors_io.load_dir(model_dir)
    except (OSError, ValueError) as e:
        raise EncoderError(str(e)) from None
    prefix = FAMILIES[cfg.family]["prefix"]
    if "embeddings.word_embeddings.weight" not in tensors and prefix + "embeddings.word_embeddings.weight" in tensors:
        tensors = {n[len(prefix):]: t for n, t in tensors.items() if n.startswith(prefix)}
    w = {}
    for name, shape in expected_tensors(cfg).items():
        if name not in tensors:
            raise EncoderError(f"{model_dir}: missing tensor {name}")
        if list(tensors[name].shape) != shape:
            raise EncoderError(f"{model_dir}: {name}: shape {list(tensors[name].shape)} != {shape}")
        w[name] = tensors[name].to(dtype)
    return cfg, w


def position_ids(cfg, ids):
    """XLM-R: create_position_ids_from_input_ids (cumsum of the non-padding mask, offset by the
    padding index, the padding index itself at padding); BERT: 0..T-1."""
    if cfg.family == "bert":
        return torch.arange(ids.shape[1]).expand_as(ids)
    mask = ids.ne(cfg.pad).int()
    return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + cfg.pad


def encoder_forward(cfg, w, ids, mask):
    """last_hidden_state of XLMRobertaModel / BertModel for ids [B, T] and attention mask [B, T]."""
    dtype = w["embeddings.word_embeddings.weight"].dtype
    B, T = ids.shape
    x = (F.embedding(ids, w["embeddings.word_embeddings.weight"])
         + F.embedding(torch.zeros_like(ids), w["embeddings.token_type_embeddings.weight"])
         + F.embedding(position_ids(cfg, ids), w["embeddings.position_embeddings.weight"]))
    x = F.layer_norm(x, [cfg.hidden], w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], cfg.eps)
    # get_extended_attention_mask: (1 - mask) * finfo(dtype).min, broadcast over heads and queries
    ext = (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def lin(h, name):
        return F.linear(h, w[name + ".weight"], w[name + ".bias"])

    def heads(h):
        return h.view(B, T, cfg.heads, cfg.head_dim).transpose(1, 2)

    for n in range(cfg.layers):
        p = f"encoder.layer.{n}"
        q, k, v = (heads(lin(x, f"{p}.attention.self.{s}")) for s in ("query", "key", "value"))
        scores = q @ k.transpose(-1, -2) / (cfg.head_dim ** 0.5) + ext
        ctx = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, cfg.hidden)
        a = F.layer_norm(lin(ctx, f"{p}.attention.output.dense") + x, [cfg.hidden],
                         w[f"{p}.attention.output.LayerNorm.weight"], w[f"{p}.attention.output.LayerNorm.bias"], cfg.eps)
        inter = F.gelu(lin(a, f"{p}.intermediate.dense"))  # ACT2FN["gelu"]: the exact erf form
        x = F.layer_norm(lin(inter, f"{p}.output.dense") + a, [cfg.hidden],
                         w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"], cfg.eps)
    return x


def average_pool(hidden, mask):
    """e5's average_pool: the mean of the states where the attention mask is 1."""
    h = hidden.masked_fill(~mask[..., None].bool(), 0.0)
    return h.sum(dim=1) / mask.sum(dim=1)[..., None]


def pad_batch(cfg, rows, where):
    if not isinstance(rows, list) or not rows:
        raise EncoderError(f"{where}: input_ids must be a non-empty list of rows")
    T = 0
    for r, row in enumerate(rows):
        if not isinstance(row, list) or not row or not all(isinstance(i, int) and 0 <= i < cfg.vocab_size for i in row):
            raise EncoderError(f"{where}: input_ids[{r}] must be a non-empty list of token ids < {cfg.vocab_size}")
        T = max(T, len(row))
    ids = torch.full((len(rows), T), cfg.pad, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
    return ids, mask


def cmd_encode(args):
    dtype = torch.float64 if args.float64 else torch.float32
    cfg, w = load_encoder(args.model, dtype)
    try:
        with open(args.input) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise EncoderError(f"{args.input}: {e}") from None
    ids, mask = pad_batch(cfg, data.get("input_ids") if isinstance(data, dict) else None, args.input)
    with torch.no_grad():
        hidden = encoder_forward(cfg, w, ids, mask)
        mean, cls = average_pool(hidden, mask), hidden[:, 0]
        out = {"hidden": hidden, "mean": mean, "cls": cls,
               "mean_l2": F.normalize(mean, p=2, dim=1), "cls_l2": F.normalize(cls, p=2, dim=1)}
    out_dtype = torch.float64 if args.output_f64 else torch.float32
    safetensors_io.save({k: v.to(out_dtype).contiguous() for k, v in out.items()}, args.output)


def cmd_encode_bench(args):
    """Times forward passes plus mean pooling of random texts of args.seq tokens."""
    if args.batch < 1 or args.seq < 1 or args.steps < 1:
        raise EncoderError("--batch, --seq and --steps must be positive")
    cfg, w = load_encoder(args.model, torch.float32)
    generator = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(cfg.vocab_size, (args.batch, args.seq), generator=generator)
    ids[ids == cfg.pad] = cfg.pad + 1
    mask = torch.ones_like(ids)
    with torch.no_grad():
        F.normalize(average_pool(encoder_forward(cfg, w, ids, mask), mask), dim=1)  # warm-up
        start = time.perf_counter()
        for _ in range(args.steps):
            F.normalize(average_pool(encoder_forward(cfg, w, ids, mask), mask), dim=1)
        seconds = (time.perf_counter() - start) / args.steps
    print(json.dumps({"texts_per_s": args.batch / seconds, "tokens_per_s": args.batch * args.seq / seconds,
                      "seconds_per_batch": seconds, "batch": args.batch, "seq": args.seq, "steps": args.steps,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))
