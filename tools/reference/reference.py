#!/usr/bin/python3
"""An independent PyTorch reference for the decoders compass implements, and their PEFT LoRA.

It follows Hugging Face transformers' modeling code for LlamaForCausalLM, Qwen2ForCausalLM and
Phi3ForCausalLM, and PEFT's `peft.tuners.lora.layer.Linear`, written from scratch in plain torch
(README.md beside this file says which HF/PEFT functions each piece mirrors). The Go tests run it
on tiny random checkpoints and compare logits, loss and LoRA gradients.

    reference.py forward     --model DIR [--adapter DIR] --input IN.json --output OUT.safetensors
                             [--merge] [--float64 | --dtype auto|float32|bfloat16|float64]
                             [--output-f64] [--threads T]
    reference.py make-adapter --model DIR --output DIR --rank R --alpha A --targets q_proj,v_proj
                             [--rslora] [--seed S] [--b-std 0.02]
    reference.py train-bench --model DIR --adapter DIR [--batch 4] [--seq 256] [--steps N]
                             [--threads T] [--lr 1e-4] [--seed S]
    reference.py train       --model DIR --adapter DIR --plan PLAN.json --output OUTDIR
                             [--threads T] [--dtype auto|float32|float64]
    reference.py encode      --model DIR --input IN.json --output OUT.safetensors [--float64]
    reference.py encode-bench --model DIR [--batch 16] [--seq 64] [--steps N] [--threads T]

Only the standard library and torch (and safetensors_io.py beside this file) are used.
"""

import argparse
import json
import math
import os
import re
import sys
import time


def _preset_threads(argv):
    """--threads must reach OpenMP/BLAS before torch is imported: set their variables now."""
    for i, arg in enumerate(argv):
        value = None
        if arg == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
        if value is not None and value.isdigit() and int(value) > 0:
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = value


if __name__ == "__main__":
    _preset_threads(sys.argv[1:])

import torch  # noqa: E402  (after the thread variables)
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import encoder  # noqa: E402
import safetensors_io  # noqa: E402

IGNORE_INDEX = -100  # HF's ignore_index for labels

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Phi3ForCausalLM": "phi3"}

# PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING (src/peft/utils/constants.py): the
# targets used when adapter_config.json has "target_modules": null. Phi-3 has no entry.
PEFT_DEFAULT_TARGETS = {"llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"]}


class ReferenceError(Exception):
    """Bad input: printed as one line, exit status 2."""


# --------------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------------


class Config:
    """The parts of config.json the forward pass uses, resolved as transformers resolves them."""

    def __init__(self, raw, path="config.json"):
        self.path = path
        archs = raw.get("architectures") or []
        if archs:
            if archs[0] not in ARCHITECTURES:
                raise ReferenceError(f"{path}: architecture {archs[0]!r} is not supported "
                                     f"(supported: {', '.join(ARCHITECTURES)})")
            self.family = ARCHITECTURES[archs[0]]
        elif raw.get("model_type") in ARCHITECTURES.values():
            self.family = raw["model_type"]
        else:
            raise ReferenceError(f"{path}: no supported architectures/model_type")

        def need(key):
            if raw.get(key) is None:
                raise ReferenceError(f"{path}: {key} is missing")
            return raw[key]

        self.hidden_size = int(need("hidden_size"))
        self.intermediate_size = int(need("intermediate_size"))
        self.num_layers = int(need("num_hidden_layers"))
        self.num_heads = int(need("num_attention_heads"))
        kv = raw.get("num_key_value_heads")
        self.num_kv_heads = int(kv) if kv is not None else self.num_heads  # HF: None -> heads
        self.vocab_size = int(need("vocab_size"))
        self.max_position_embeddings = int(need("max_position_embeddings"))
        # Defaults of LlamaConfig / Qwen2Config (1e-6) and Phi3Config (1e-5).
        self.rms_norm_eps = float(raw.get("rms_norm_eps", 1e-5 if self.family == "phi3" else 1e-6))
        # HF: getattr(config, "head_dim", None) or hidden_size // num_attention_heads
        self.head_dim = int(raw.get("head_dim") or self.hidden_size // self.num_heads)
        self.tie_word_embeddings = bool(raw.get("tie_word_embeddings", False))
        if self.num_heads % self.num_kv_heads:
            raise ReferenceError(f"{path}: num_attention_heads {self.num_heads} is not a multiple of "
                                 f"num_key_value_heads {self.num_kv_heads}")
        act = raw.get("hidden_act", "silu")
        if act != "silu":
            raise ReferenceError(f"{path}: hidden_act {act!r} is not supported (only silu)")

        # Biases. LlamaAttention: q,k,v,o all use attention_bias; LlamaMLP: mlp_bias.
        # Qwen2Attention: q,k,v bias=True, o bias=False, no MLP bias. Phi3: no biases at all.
        if self.family == "llama":
            self.qkv_bias = self.o_bias = bool(raw.get("attention_bias", False))
            self.mlp_bias = bool(raw.get("mlp_bias", False))
        elif self.family == "qwen2":
            self.qkv_bias, self.o_bias, self.mlp_bias = True, False, False
        else:
            self.qkv_bias = self.o_bias = self.mlp_bias = False

        self._parse_rope(raw)
        self._parse_sliding_window(raw)

    def _parse_rope(self, raw):
        """RoPE parameters, as RotaryEmbeddingConfigMixin.standardize_rope_params leaves them.

        transformers 4.x reads `rope_scaling` (type under "rope_type", or "type" for old files);
        transformers 5 writes `rope_parameters`, which may also hold rope_theta and
        partial_rotary_factor (the values inside the dict win over top-level ones).
        """
        path = self.path
        rope = raw.get("rope_scaling")
        if rope is None:
            rope = raw.get("rope_parameters")
        rope = dict(rope or {})
        self.rope_theta = float(rope.get("rope_theta", raw.get("rope_theta", 10000.0)))
        prf = rope.get("partial_rotary_factor", raw.get("partial_rotary_factor"))
        self.partial_rotary_factor = 1.0 if prf is None else float(prf)
        if self.family != "phi3" and self.partial_rotary_factor != 1.0:
            # LlamaAttention/Qwen2Attention's apply_rotary_pos_emb rotates the whole head.
            raise ReferenceError(f"{path}: partial_rotary_factor {prf} is not supported for {self.family}")
        # HF: dim = int(head_dim * partial_rotary_factor)
        self.rotary_dims = int(self.head_dim * self.partial_rotary_factor)
        if self.rotary_dims < 2 or self.rotary_dims % 2:
            raise ReferenceError(f"{path}: rotary dims int({self.head_dim} * {self.partial_rotary_factor}) = "
                                 f"{self.rotary_dims} must be even and >= 2")

        rope_type = rope.get("rope_type", rope.get("type")) or "default"
        if self.family == "phi3" and rope_type in ("su", "yarn"):
            rope_type = "longrope"  # Phi3Config._rope_scaling_adjustment renames early Phi-3 types
        self.rope_type = rope_type
        self.rope = rope

        # standardize_rope_params: for llama3/yarn/longrope the top-level
        # original_max_position_embeddings (Phi-3 keeps it there) wins over the dict's value,
        # and max_position_embeddings is the fallback.
        if raw.get("original_max_position_embeddings") is not None:
            self.original_max_position_embeddings = int(raw["original_max_position_embeddings"])
        elif rope.get("original_max_position_embeddings") is not None:
            self.original_max_position_embeddings = int(rope["original_max_position_embeddings"])
        else:
            self.original_max_position_embeddings = self.max_position_embeddings

        if rope_type == "default":
            pass
        elif rope_type == "llama3":
            for key in ("factor", "low_freq_factor", "high_freq_factor"):
                if rope.get(key) is None:
                    raise ReferenceError(f"{path}: rope type llama3 needs {key}")
        elif rope_type == "longrope":
            half = self.rotary_dims // 2
            for key in ("short_factor", "long_factor"):
                values = rope.get(key)
                if not isinstance(values, list) or len(values) != half:
                    raise ReferenceError(f"{path}: longrope {key} must be a list of rotary_dims/2 = {half} numbers")
        else:
            raise ReferenceError(f"{path}: rope type {rope_type!r} is not supported (default, llama3, longrope)")

    def _parse_sliding_window(self, raw):
        """Per-layer sliding window (None = full causal attention).

        Llama: none. Qwen2Config: sliding_window only when use_sliding_window, on the layers
        whose layer_types entry is "sliding_attention" (by default layers >= max_window_layers).
        Phi3Model: create_sliding_window_causal_mask on every layer whenever sliding_window is set.
        """
        n = self.num_layers
        if self.family == "llama":
            self.sliding_windows = [None] * n
        elif self.family == "qwen2":
            window = raw.get("sliding_window") if raw.get("use_sliding_window", False) else None
            layer_types = raw.get("layer_types")
            if layer_types is None:
                mwl = raw.get("max_window_layers", 28)
                layer_types = ["sliding_attention" if window is not None and i >= mwl else "full_attention"
                               for i in range(n)]
            if len(layer_types) != n:
                raise ReferenceError(f"{self.path}: layer_types has {len(layer_types)} entries for {n} layers")
            self.sliding_windows = [window if t == "sliding_attention" else None for t in layer_types]
        else:
            window = raw.get("sliding_window")
            self.sliding_windows = [window] * n

    @property
    def q_size(self):
        return self.num_heads * self.head_dim

    @property
    def kv_size(self):
        return self.num_kv_heads * self.head_dim


def load_config(model_dir):
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ReferenceError(f"{path}: {e}") from None
    return Config(raw, path)


# --------------------------------------------------------------------------------------------
# RoPE
# --------------------------------------------------------------------------------------------
# Inverse frequencies are computed in float32 with the same operations, in the same order, as
# transformers' modeling_rope_utils, so they are bit-identical to HF's. Everything below uses
# float32 tensors (torch's rounding of scalar-tensor ops included).


def default_inv_freq(theta, dim):
    """_compute_default_rope_parameters: inv_i = 1 / theta^(2i/dim), i < dim/2, in float32."""
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim
    return 1.0 / (theta ** exponents)


def llama3_inv_freq(cfg):
    """_compute_llama3_parameters: Llama 3.1's wavelength-banded scaling of the default frequencies.

    wavelen < original/high_freq_factor: unchanged; wavelen > original/low_freq_factor: divided by
    factor; in between (both bounds included): linear in original/wavelen between the two.
    """
    inv = default_inv_freq(cfg.rope_theta, cfg.rotary_dims)
    factor = cfg.rope["factor"]
    low = cfg.rope["low_freq_factor"]
    high = cfg.rope["high_freq_factor"]
    # HF reads original_max_position_embeddings from the rope dict here (standardized, see Config).
    original = cfg.original_max_position_embeddings
    low_freq_wavelen = original / low
    high_freq_wavelen = original / high

    wavelen = 2 * math.pi / inv
    long_scaled = torch.where(wavelen > low_freq_wavelen, inv / factor, inv)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * long_scaled / factor + smooth * long_scaled
    medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, long_scaled)


def longrope_inv_freq(cfg, seq_len):
    """_compute_longrope_parameters: inv_i = 1 / (ext_i * theta^(2i/dim)).

    ext = long_factor when seq_len > original_max_position_embeddings, else short_factor. In HF the
    choice is made per forward by dynamic_rope_update's longrope_frequency_update with
    seq_len = max(position_ids) + 1 (over the whole batch): T for rows at positions 0..T-1,
    the longest document's length for packed rows.
    """
    key = "long_factor" if seq_len > cfg.original_max_position_embeddings else "short_factor"
    ext = torch.tensor(cfg.rope[key], dtype=torch.float32)
    exponents = torch.arange(0, cfg.rotary_dims, 2, dtype=torch.int64).float() / cfg.rotary_dims
    return 1.0 / (ext * cfg.rope_theta ** exponents)


def longrope_attention_factor(cfg):
    """The factor cos and sin are multiplied by (_compute_longrope_parameters).

    attention_factor from the rope dict when given; otherwise, with factor = the dict's "factor"
    or else max_position_embeddings / original_max_position_embeddings (transformers 5; 4.x always
    used that ratio when the config has a top-level original_max_position_embeddings):
    1 if factor <= 1, else sqrt(1 + ln(factor) / ln(original)).
    """
    if cfg.rope.get("attention_factor") is not None:
        return float(cfg.rope["attention_factor"])
    original = cfg.original_max_position_embeddings
    factor = cfg.rope.get("factor")
    if factor is None:
        factor = cfg.max_position_embeddings / original
    if factor <= 1.0:
        return 1.0
    return math.sqrt(1 + math.log(factor) / math.log(original))


def rope_parameters(cfg, seq_len):
    """(inv_freq float32 [rotary_dims/2], attention_factor) for a forward over seq_len positions."""
    if cfg.rope_type == "default":
        return default_inv_freq(cfg.rope_theta, cfg.rotary_dims), 1.0
    if cfg.rope_type == "llama3":
        return llama3_inv_freq(cfg), 1.0
    if cfg.rope_type == "longrope":
        return longrope_inv_freq(cfg, seq_len), longrope_attention_factor(cfg)
    raise ReferenceError(f"rope type {cfg.rope_type!r} is not supported")


def rope_cos_sin(cfg, positions, dtype):
    """cos, sin [B, T, rotary_dims] for integer positions [B, T] (LlamaRotaryEmbedding.forward).

    HF: freqs = inv_freq x position in float32, emb = cat(freqs, freqs), cos = cos(emb) * factor in
    float32, then cast to the activations' dtype. In float64 mode the same inv_freq (the model's
    float32 constants) is used, but the angle, cos and sin are evaluated in float64.
    """
    inv_freq, attention_factor = rope_parameters(cfg, int(positions.max()) + 1)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    freqs = positions.to(work)[:, :, None] * inv_freq.to(work)[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = emb.cos() * attention_factor
    sin = emb.sin() * attention_factor
    return cos.to(dtype), sin.to(dtype)


def rotate_half(x):
    """HF's rotate_half: cat(-x2, x1) where x1, x2 are the two halves of the last dim."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x, cos, sin):
    """Rotate the first cos.shape[-1] dims of x [B, H, T, D]; the rest pass through.

    Mirrors apply_rotary_pos_emb (Phi-3's partial form, which equals Llama's when all dims rotate).
    """
    rot = cos.shape[-1]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    rotated = (x_rot * cos) + (rotate_half(x_rot) * sin)
    return torch.cat((rotated, x_pass), dim=-1)


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


class LoraParams:
    """One adapted module's LoRA: A [r, in], B [out, r], scaling (PEFT's lora_A/lora_B/scaling)."""

    def __init__(self, module, A, B, scaling):
        self.module = module
        self.A = A
        self.B = B
        self.scaling = scaling

    @property
    def a_name(self):
        return peft_param_name(self.module, "A")

    @property
    def b_name(self):
        return peft_param_name(self.module, "B")


def peft_param_name(module, which):
    """The name PEFT saves a LoRA weight under (get_peft_model_state_dict drops the adapter name)."""
    return f"base_model.model.{module}.lora_{which}.weight"


class Linear:
    """An nn.Linear of the base model (y = x W^T + b), optionally with a LoRA adapter."""

    def __init__(self, name, weight, bias=None):
        self.name = name
        self.weight = weight
        self.bias = bias
        self.lora = None
        self.merged = False

    @property
    def in_features(self):
        return self.weight.shape[1]

    @property
    def out_features(self):
        return self.weight.shape[0]


def linear(x, lin):
    """peft.tuners.lora.layer.Linear.forward (unmerged): base(x) + B(A(dropout(x))) * scaling.

    Dropout is the identity here (lora_dropout 0, or eval mode). As PEFT does, x is cast to the
    LoRA weights' dtype for the adapter path and the sum is cast back to the base output's dtype.
    """
    y = F.linear(x, lin.weight, lin.bias)
    lora = lin.lora
    if lora is None or lin.merged:
        return y
    xa = x.to(lora.A.dtype)
    delta = F.linear(F.linear(xa, lora.A), lora.B) * lora.scaling
    return (y + delta).to(y.dtype)


def merge_lora(lin):
    """Linear.merge / get_delta_weight: W <- W + (B @ A) * scaling, kept differentiable.

    On CPU, PEFT computes the delta of bf16/fp16 weights in float32 and casts it back.
    """
    lora = lin.lora
    A, B = lora.A, lora.B
    if lin.weight.dtype in (torch.float16, torch.bfloat16):
        A, B = A.float(), B.float()
    delta = (B @ A) * lora.scaling
    lin.weight = lin.weight + delta.to(lin.weight.dtype)
    lin.merged = True


def upcast_dtype(dtype):
    """HF computes RMSNorm and softmax in float32; a float64 run keeps float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rms_norm(x, weight, eps):
    """LlamaRMSNorm.forward: variance in float32, x * rsqrt(var + eps), cast back, then * weight."""
    input_dtype = x.dtype
    h = x.to(upcast_dtype(input_dtype))
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(input_dtype)


def repeat_kv(x, n_rep):
    """repeat_kv: [B, KV, T, D] -> [B, KV*n_rep, T, D]; query head h reads kv head h // n_rep."""
    if n_rep == 1:
        return x
    b, kv, t, d = x.shape
    return x[:, :, None, :, :].expand(b, kv, n_rep, t, d).reshape(b, kv * n_rep, t, d)


def attention_mask(t, window, dtype, doc_ids=None):
    """Additive mask as HF's eager path builds it: 0 where key j is visible from query i, the
    dtype's most negative value elsewhere. Visible: j <= i (causal_mask_function) and, with a
    sliding window W, j > i - W (sliding_window_overlay). With doc_ids [B, T] (packed rows) also
    doc_ids[b, i] == doc_ids[b, j] (packed_sequence_mask_function): the mask is then [B, 1, T, T],
    otherwise [1, 1, T, T]. Within one document index differences are position differences, so
    the window means the same thing in both cases."""
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    visible = j <= i
    if window is not None:
        visible = visible & (j > i - window)
    visible = visible[None]
    if doc_ids is not None:
        visible = visible & (doc_ids[:, :, None] == doc_ids[:, None, :])
    mask = torch.zeros(visible.shape, dtype=dtype)
    mask.masked_fill_(~visible, torch.finfo(dtype).min)
    return mask[:, None]


def packed_positions(doc_lens, t):
    """position_ids and document indexes [B, T] of rows packed from documents of the given lengths
    (per row, summing to T): positions restart at 0 in each document, as HF's
    DataCollatorWithFlattening writes them and as FlashAttention-2 varlen sees them."""
    positions, doc_ids = [], []
    for b, lens in enumerate(doc_lens):
        if sum(lens) != t or any(n <= 0 for n in lens):
            raise ReferenceError(f"doc_lens[{b}] = {list(lens)}: positive lengths must sum to T = {t}")
        positions.append(torch.cat([torch.arange(n) for n in lens]))
        doc_ids.append(torch.cat([torch.full((n,), k, dtype=torch.int64) for k, n in enumerate(lens)]))
    return torch.stack(positions), torch.stack(doc_ids)


def attention(cfg, layer, x, cos, sin, mask):
    """LlamaAttention / Qwen2Attention / Phi3Attention forward with eager_attention_forward."""
    b, t, _ = x.shape
    if cfg.family == "phi3":
        qkv = linear(x, layer["qkv_proj"])  # fused: [q rows, k rows, v rows]
        q = qkv[..., :cfg.q_size]
        k = qkv[..., cfg.q_size:cfg.q_size + cfg.kv_size]
        v = qkv[..., cfg.q_size + cfg.kv_size:]
    else:
        q = linear(x, layer["q_proj"])
        k = linear(x, layer["k_proj"])
        v = linear(x, layer["v_proj"])
    q = q.view(b, t, cfg.num_heads, cfg.head_dim).transpose(1, 2)
    k = k.view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
    v = v.view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)

    q = apply_rope(q, cos, sin)
    k = apply_rope(k, cos, sin)

    n_rep = cfg.num_heads // cfg.num_kv_heads
    k = repeat_kv(k, n_rep)
    v = repeat_kv(v, n_rep)
    scores = torch.matmul(q, k.transpose(2, 3)) * cfg.head_dim ** -0.5
    scores = scores + mask
    probs = F.softmax(scores, dim=-1, dtype=upcast_dtype(q.dtype)).to(q.dtype)
    out = torch.matmul(probs, v)  # [B, H, T, D]
    out = out.transpose(1, 2).reshape(b, t, cfg.q_size)
    return linear(out, layer["o_proj"])


def mlp(cfg, layer, x):
    """LlamaMLP / Qwen2MLP: down(silu(gate(x)) * up(x)); Phi3MLP: the same from the fused
    gate_up_proj, whose output is [gate, up] (chunk(2))."""
    if cfg.family == "phi3":
        gate_up = linear(x, layer["gate_up_proj"])
        gate, up = gate_up.chunk(2, dim=-1)
        return linear(up * F.silu(gate), layer["down_proj"])
    return linear(F.silu(linear(x, layer["gate_proj"])) * linear(x, layer["up_proj"]), layer["down_proj"])


def decoder_layer(cfg, layer, h, cos, sin, mask):
    """LlamaDecoderLayer: h + attn(norm1(h)), then h + mlp(norm2(h)) (Phi-3's resid dropouts are
    identity in eval)."""
    residual = h
    x = rms_norm(h, layer["input_layernorm"], cfg.rms_norm_eps)
    h = residual + attention(cfg, layer, x, cos, sin, mask)
    residual = h
    x = rms_norm(h, layer["post_attention_layernorm"], cfg.rms_norm_eps)
    return residual + mlp(cfg, layer, x)


def model_forward(model, input_ids, doc_lens=None):
    """*ForCausalLM.forward without labels: logits [B, T, V] for input_ids [B, T].

    Without doc_lens each row is one sequence at positions 0..T-1. doc_lens gives, per row, the
    lengths of the documents packed into it (summing to T): each document then attends only to
    itself and its positions restart at 0, as HF does for packed rows given by position_ids
    (masking_utils' find_packed_sequence_indices / packed_sequence_mask_function) and as
    FlashAttention-2 varlen does. Phi-3's longrope then chooses its factors from the longest
    document of the batch (max(position_ids) + 1), not from T.
    """
    cfg = model.cfg
    b, t = input_ids.shape
    h = F.embedding(input_ids, model.embed)
    if doc_lens is None:
        positions, doc_ids = torch.arange(t)[None, :].expand(b, t), None
    else:
        if len(doc_lens) != b:
            raise ReferenceError(f"doc_lens has {len(doc_lens)} rows for a batch of {b}")
        positions, doc_ids = packed_positions(doc_lens, t)
    cos, sin = rope_cos_sin(cfg, positions, model.dtype)
    masks = {}
    for i, layer in enumerate(model.layers):
        window = cfg.sliding_windows[i]
        if window not in masks:
            masks[window] = attention_mask(t, window, model.dtype, doc_ids)
        h = decoder_layer(cfg, layer, h, cos, sin, masks[window])
    h = rms_norm(h, model.norm, cfg.rms_norm_eps)
    return linear(h, model.lm_head)


def causal_lm_loss(logits, labels):
    """HF's ForCausalLMLoss on labels already aligned with positions (label[b, t] is the target
    predicted at position t; -100 = ignored): logits upcast to float32, cross-entropy averaged over
    the counted positions (sum / count). Also the per-position log-probability of the label (0
    where ignored)."""
    work = logits if logits.dtype == torch.float64 else logits.float()
    vocab = work.shape[-1]
    loss = F.cross_entropy(work.reshape(-1, vocab), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                           reduction="mean")
    counted = labels != IGNORE_INDEX
    logp = F.log_softmax(work, dim=-1)
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    logprobs = torch.where(counted, picked, torch.zeros_like(picked))
    return loss, logprobs


# --------------------------------------------------------------------------------------------
# Loading a checkpoint
# --------------------------------------------------------------------------------------------


class Model:
    def __init__(self, cfg, dtype):
        self.cfg = cfg
        self.dtype = dtype
        self.embed = None
        self.layers = []  # one dict per layer: Linear modules by short name, norm weights
        self.norm = None
        self.lm_head = None

    def linear_modules(self):
        """{module name: Linear}, in the order transformers registers the modules (named_modules)."""
        out = {}
        for i, layer in enumerate(self.layers):
            for short in _layer_linear_order(self.cfg.family):
                lin = layer[short]
                out[lin.name] = lin
        out[self.lm_head.name] = self.lm_head
        return out

    def module_names(self):
        """Every module name HF's named_modules() yields that target matching might hit."""
        names = ["model", "model.embed_tokens", "model.layers", "model.norm", "model.rotary_emb", "lm_head"]
        for i in range(self.cfg.num_layers):
            p = f"model.layers.{i}"
            names += [p, f"{p}.self_attn", f"{p}.mlp", f"{p}.mlp.act_fn", f"{p}.input_layernorm",
                      f"{p}.post_attention_layernorm"]
            names += [f"{p}.{_linear_parent(s)}.{s}" for s in _layer_linear_order(self.cfg.family)]
        return names


def _layer_linear_order(family):
    if family == "phi3":
        return ["o_proj", "qkv_proj", "gate_up_proj", "down_proj"]  # Phi3Attention registers o_proj first
    return ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _linear_parent(short):
    return "self_attn" if short in ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj") else "mlp"


def expected_tensors(cfg):
    """{name: shape} of the checkpoint tensors the config implies (HF names, [out, in])."""
    hs, inter = cfg.hidden_size, cfg.intermediate_size
    spec = {"model.embed_tokens.weight": [cfg.vocab_size, hs], "model.norm.weight": [hs]}
    if not cfg.tie_word_embeddings:
        spec["lm_head.weight"] = [cfg.vocab_size, hs]
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}"
        spec[f"{p}.input_layernorm.weight"] = [hs]
        spec[f"{p}.post_attention_layernorm.weight"] = [hs]
        if cfg.family == "phi3":
            spec[f"{p}.self_attn.qkv_proj.weight"] = [cfg.q_size + 2 * cfg.kv_size, hs]
            spec[f"{p}.self_attn.o_proj.weight"] = [hs, cfg.q_size]
            spec[f"{p}.mlp.gate_up_proj.weight"] = [2 * inter, hs]
            spec[f"{p}.mlp.down_proj.weight"] = [hs, inter]
            continue
        for name, out in (("q_proj", cfg.q_size), ("k_proj", cfg.kv_size), ("v_proj", cfg.kv_size)):
            spec[f"{p}.self_attn.{name}.weight"] = [out, hs]
            if cfg.qkv_bias:
                spec[f"{p}.self_attn.{name}.bias"] = [out]
        spec[f"{p}.self_attn.o_proj.weight"] = [hs, cfg.q_size]
        if cfg.o_bias:
            spec[f"{p}.self_attn.o_proj.bias"] = [hs]
        for name, shape in (("gate_proj", [inter, hs]), ("up_proj", [inter, hs]), ("down_proj", [hs, inter])):
            spec[f"{p}.mlp.{name}.weight"] = shape
            if cfg.mlp_bias:
                spec[f"{p}.mlp.{name}.bias"] = [shape[0]]
    return spec


def resolve_dtype(choice, stored):
    """The compute dtype: the weights' own (float16 is upcast to float32: torch 1.13's CPU kernels
    lack it), or the one asked for."""
    if choice == "auto":
        if stored == torch.float16:
            print("reference: float16 weights are computed in float32", file=sys.stderr)
            return torch.float32
        return stored
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}[choice]


def load_model(model_dir, dtype_choice="auto"):
    cfg = load_config(model_dir)
    try:
        tensors = safetensors_io.load_dir(model_dir)
    except (OSError, ValueError) as e:
        raise ReferenceError(str(e)) from None
    spec = expected_tensors(cfg)
    missing = [n for n in spec if n not in tensors]
    if missing:
        raise ReferenceError(f"{model_dir}: missing tensors: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    for name in list(tensors):
        if name in spec:
            continue
        if name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and cfg.tie_word_embeddings):
            del tensors[name]  # HF ignores these (a buffer of old checkpoints; the tied head)
            continue
        raise ReferenceError(f"{model_dir}: unexpected tensor {name!r}")
    for name, shape in spec.items():
        if list(tensors[name].shape) != shape:
            raise ReferenceError(f"{model_dir}: {name}: shape {list(tensors[name].shape)} != {shape}")
        if not tensors[name].is_floating_point():
            raise ReferenceError(f"{model_dir}: {name}: dtype {tensors[name].dtype} is not floating point")

    dtype = resolve_dtype(dtype_choice, tensors["model.embed_tokens.weight"].dtype)
    w = {n: t.to(dtype) for n, t in tensors.items()}
    model = Model(cfg, dtype)
    model.embed = w["model.embed_tokens.weight"]
    model.norm = w["model.norm.weight"]
    head = w["model.embed_tokens.weight"] if cfg.tie_word_embeddings else w["lm_head.weight"]
    model.lm_head = Linear("lm_head", head)
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}"
        layer = {"input_layernorm": w[f"{p}.input_layernorm.weight"],
                 "post_attention_layernorm": w[f"{p}.post_attention_layernorm.weight"]}
        for short in _layer_linear_order(cfg.family):
            name = f"{p}.{_linear_parent(short)}.{short}"
            layer[short] = Linear(name, w[f"{name}.weight"], w.get(f"{name}.bias"))
        model.layers.append(layer)
    return model


# --------------------------------------------------------------------------------------------
# PEFT LoRA adapters
# --------------------------------------------------------------------------------------------

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# Options of LoraConfig that change what an adapter computes and that this reference does not
# implement: an adapter using any of them is refused rather than computed wrongly.
_UNSUPPORTED_WHEN_SET = ["modules_to_save", "layer_replication", "target_parameters", "trainable_token_indices",
                         "alora_invocation_tokens", "arrow_config", "velora_config", "monteclora_config",
                         "kasa_config", "use_bdlora", "use_qalora", "use_dora", "lora_bias", "fan_in_fan_out"]


def peft_layer_index_ok(acfg, key):
    """layers_to_transform / layers_pattern of check_target_module_exists (tuners_utils.py)."""
    indexes = acfg.get("layers_to_transform")
    if indexes is None or (isinstance(indexes, list) and len(indexes) == 0):
        return True
    pattern = acfg.get("layers_pattern")
    found = None
    if not pattern:
        found = re.match(r".*?\.[^.]*\.(\d+)\.", key)
    else:
        for pat in [pattern] if isinstance(pattern, str) else pattern:
            found = re.match(rf".*?\.{pat}\.(\d+)\.", key)
            if found is not None:
                break
    if found is None:
        return False
    index = int(found.group(1))
    return index == indexes if isinstance(indexes, int) else index in indexes


def peft_target_matches(acfg, key, linear_names):
    """check_target_module_exists (peft/tuners/tuners_utils.py) for one module name `key`.

    exclude_modules wins; a string target_modules is a full regex match (re.fullmatch); a list
    matches a module whose name equals an entry or ends with "." + entry, the latter subject to
    layers_to_transform. "all-linear" means every Linear except the output layer (lm_head).
    """
    exclude = acfg.get("exclude_modules")
    if exclude:
        if isinstance(exclude, str):
            if re.fullmatch(exclude, key):
                return False
        elif key in exclude or any(key.endswith(f".{e}") for e in exclude):
            return False
    targets = acfg["target_modules"]
    if isinstance(targets, str) and targets.lower() == "all-linear":
        return key in linear_names and key != "lm_head"
    if isinstance(targets, str):
        return re.fullmatch(targets, key) is not None
    if key in targets:
        return True
    if any(key.endswith(f".{t}") for t in targets):
        return peft_layer_index_ok(acfg, key)
    return False


def peft_pattern_value(patterns, key, default):
    """get_pattern_key (peft/utils/other.py) + lookup: the first pattern p with
    re.match(rf"(.*\\.)?({p})$", key) gives the value for rank_pattern / alpha_pattern."""
    for p, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({p})$", key):
            return value
    return default


def adapter_targets(acfg, model):
    """The names of the modules the adapter config adapts, in module order."""
    acfg = dict(acfg)
    if acfg.get("target_modules") is None:
        if model.cfg.family not in PEFT_DEFAULT_TARGETS:
            raise ReferenceError(f"{ADAPTER_CONFIG}: target_modules is null and PEFT has no default for "
                                 f"{model.cfg.family}")
        acfg["target_modules"] = PEFT_DEFAULT_TARGETS[model.cfg.family]
    linears = model.linear_modules()
    chosen = []
    for key in model.module_names():
        if peft_target_matches(acfg, key, linears):
            if key not in linears:
                raise ReferenceError(f"{ADAPTER_CONFIG}: target module {key!r} is not a Linear layer "
                                     f"(only Linear layers are supported)")
            chosen.append(key)
    if not chosen:
        raise ReferenceError(f"{ADAPTER_CONFIG}: target modules {acfg['target_modules']!r} match no module "
                             f"of the {model.cfg.family} model")
    order = list(linears)
    return sorted(chosen, key=order.index)


def load_adapter(adapter_dir, model):
    """Attach the PEFT LoRA adapter in adapter_dir to the model's Linear modules.

    LoRA weights are float32 (PEFT keeps adapters in float32 over bf16 base weights), float64 in
    a float64 run. Returns {PEFT parameter name: leaf tensor}, in module order, A before B.
    """
    cfg_path = os.path.join(adapter_dir, ADAPTER_CONFIG)
    try:
        with open(cfg_path) as f:
            acfg = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ReferenceError(f"{cfg_path}: {e}") from None
    if acfg.get("peft_type") != "LORA":
        raise ReferenceError(f"{cfg_path}: peft_type {acfg.get('peft_type')!r} is not LORA")
    for key in _UNSUPPORTED_WHEN_SET:
        if acfg.get(key):
            raise ReferenceError(f"{cfg_path}: {key}={acfg[key]!r} is not supported")
    if acfg.get("bias", "none") != "none":
        raise ReferenceError(f"{cfg_path}: bias={acfg['bias']!r} is not supported (only \"none\")")
    if acfg.get("lora_dropout", 0.0):
        print(f"reference: lora_dropout {acfg['lora_dropout']} is treated as identity (eval mode)",
              file=sys.stderr)

    weights_path = os.path.join(adapter_dir, ADAPTER_WEIGHTS)
    try:
        tensors, _ = safetensors_io.load(weights_path)
    except (OSError, ValueError) as e:
        raise ReferenceError(str(e)) from None
    # Adapters saved through transformers' PEFT integration lack the PeftModel prefix.
    tensors = {(n if n.startswith("base_model.model.") else "base_model.model." + n): t for n, t in tensors.items()}

    lora_dtype = torch.float64 if model.dtype == torch.float64 else torch.float32
    linears = model.linear_modules()
    params = {}
    for name in adapter_targets(acfg, model):
        lin = linears[name]
        r = int(peft_pattern_value(acfg.get("rank_pattern"), name, acfg.get("r", 8)))
        alpha = peft_pattern_value(acfg.get("alpha_pattern"), name, acfg.get("lora_alpha", 8))
        scaling = alpha / math.sqrt(r) if acfg.get("use_rslora", False) else alpha / r
        a_name, b_name = peft_param_name(name, "A"), peft_param_name(name, "B")
        for pname in (a_name, b_name):
            if pname not in tensors:
                raise ReferenceError(f"{weights_path}: missing {pname}")
        A, B = tensors.pop(a_name), tensors.pop(b_name)
        if list(A.shape) != [r, lin.in_features] or list(B.shape) != [lin.out_features, r]:
            raise ReferenceError(f"{weights_path}: {name}: lora_A {list(A.shape)} / lora_B {list(B.shape)}, "
                                 f"want [{r}, {lin.in_features}] / [{lin.out_features}, {r}]")
        A = A.to(lora_dtype).clone().requires_grad_(True)
        B = B.to(lora_dtype).clone().requires_grad_(True)
        lin.lora = LoraParams(name, A, B, scaling)
        params[a_name] = A
        params[b_name] = B
    if tensors:
        raise ReferenceError(f"{weights_path}: tensors for no targeted module: {sorted(tensors)[:5]}")
    return params


def peft_adapter_config(base_model, r, alpha, targets, use_rslora):
    """adapter_config.json as PEFT's LoraConfig.save_pretrained writes it (json.dumps(indent=2,
    sort_keys=True) of every dataclass field but runtime_config; save_pretrained sets
    inference_mode true). The field set is that of PEFT 0.20.1.dev0 (commit 5d602fd)."""
    return {
        "alora_invocation_tokens": None,
        "alpha_pattern": {},
        "arrow_config": None,
        "auto_mapping": None,
        "base_model_name_or_path": base_model,
        "bias": "none",
        "corda_config": None,
        "ensure_weight_tying": False,
        "eva_config": None,
        "exclude_modules": None,
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "kasa_config": None,
        "layer_replication": None,
        "layers_pattern": None,
        "layers_to_transform": None,
        "loftq_config": {},
        "lora_alpha": alpha,
        "lora_bias": False,
        "lora_dropout": 0.0,
        "lora_ga_config": None,
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "modules_to_save": None,
        "monteclora_config": None,
        "peft_type": "LORA",
        "peft_version": "0.20.1.dev0@5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40",
        "qalora_group_size": 16,
        "r": r,
        "rank_pattern": {},
        "revision": None,
        "target_modules": sorted(targets),  # a set in LoraConfig, written as a list
        "target_parameters": None,
        "task_type": "CAUSAL_LM",
        "trainable_token_indices": None,
        "use_bdlora": None,
        "use_dora": False,
        "use_qalora": False,
        "use_rslora": use_rslora,
        "velora_config": None,
    }


# --------------------------------------------------------------------------------------------
# LoRA training (the `train` subcommand)
# --------------------------------------------------------------------------------------------
# The contract the Go trainer is held to (README.md, "train"): per step, the loss is the sum of
# -log p(label) over every micro-batch of the step divided by the labels counted in the whole
# step; gradients are clipped as clip_grad_norm_ does; torch.optim.AdamW updates the LoRA
# parameters with the lr of HF's LambdaLR schedules.

SCHEDULES = ("constant", "linear", "cosine")


class MicroBatch:
    """One forward and backward of a step: input_ids, labels [B, T]; doc_lens (per row) or None."""

    def __init__(self, input_ids, labels, doc_lens=None):
        self.input_ids = input_ids
        self.labels = labels
        self.doc_lens = doc_lens

    @property
    def counted(self):
        return int((self.labels != IGNORE_INDEX).sum())


class Plan:
    """PLAN.json, checked: steps (each a list of MicroBatch), AdamW's settings, the schedule
    (name, warmup_steps, total_steps, min_lr) and max_grad_norm (0: no clipping)."""

    def __init__(self, steps, lr, betas, eps, weight_decay, schedule, max_grad_norm):
        self.steps = steps
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.max_grad_norm = max_grad_norm


def token_grid(rows, where, vocab_size, allow_ignore):
    """A rectangular [B][T] list of token ids (and -100 when allow_ignore) as an int64 tensor."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) and r for r in rows):
        raise ReferenceError(f"{where} must be a non-empty list of non-empty lists")
    if len({len(r) for r in rows}) != 1:
        raise ReferenceError(f"{where}: sequences must have equal lengths")
    for b, row in enumerate(rows):
        for t, v in enumerate(row):
            if type(v) is not int or not (0 <= v < vocab_size or (allow_ignore and v == IGNORE_INDEX)):
                raise ReferenceError(f"{where}[{b}][{t}] = {v!r} is not a token id < {vocab_size}"
                                     + (" or -100" if allow_ignore else ""))
    return torch.tensor(rows, dtype=torch.int64)


def _check_keys(obj, allowed, where):
    """Unknown keys are refused: a misspelt setting must not silently fall back to a default."""
    if not isinstance(obj, dict):
        raise ReferenceError(f"{where} must be a JSON object")
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise ReferenceError(f"{where}: unknown keys {unknown} (known: {', '.join(allowed)})")


def _number(value, where, low=0.0, below=None):
    """A finite JSON number >= low (and < below when given)."""
    if type(value) not in (int, float) or not math.isfinite(value) or value < low or \
            (below is not None and value >= below):
        bounds = f">= {low:g}" + (f" and < {below:g}" if below is not None else "")
        raise ReferenceError(f"{where} = {value!r} must be a finite number {bounds}")
    return float(value)


def _count(value, where):
    if type(value) is not int or value < 0:
        raise ReferenceError(f"{where} = {value!r} must be a non-negative integer")
    return value


def parse_micro_batch(data, vocab_size, where):
    _check_keys(data, ("input_ids", "labels", "doc_lens"), where)
    ids = token_grid(data.get("input_ids"), f"{where}.input_ids", vocab_size, False)
    labels = token_grid(data.get("labels"), f"{where}.labels", vocab_size, True)
    if labels.shape != ids.shape:
        raise ReferenceError(f"{where}: labels {list(labels.shape)} and input_ids {list(ids.shape)} differ in shape")
    doc_lens = data.get("doc_lens") or None  # null or [] (a nil or empty Go slice): one document per row
    if doc_lens is not None:
        b, t = ids.shape
        if not isinstance(doc_lens, list) or len(doc_lens) != b:
            raise ReferenceError(f"{where}.doc_lens must be a list of {b} rows, one per row of input_ids")
        for i, lens in enumerate(doc_lens):
            if not isinstance(lens, list) or not lens or \
                    not all(type(n) is int and n > 0 for n in lens) or sum(lens) != t:
                raise ReferenceError(f"{where}.doc_lens[{i}] = {lens!r} must be positive lengths summing to T = {t}")
    return MicroBatch(ids, labels, doc_lens)


def parse_plan(data, vocab_size, where="plan"):
    """Check PLAN.json (already decoded) against a vocabulary; every problem is a ReferenceError."""
    _check_keys(data, ("steps", "optimizer", "schedule", "max_grad_norm"), where)
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ReferenceError(f"{where}: steps must be a non-empty list")
    parsed = []
    for s, step in enumerate(steps):
        here = f"{where}: steps[{s}]"
        _check_keys(step, ("micro_batches",), here)
        mbs = step.get("micro_batches")
        if not isinstance(mbs, list) or not mbs:
            raise ReferenceError(f"{here}.micro_batches must be a non-empty list")
        batches = [parse_micro_batch(mb, vocab_size, f"{here}.micro_batches[{m}]") for m, mb in enumerate(mbs)]
        if sum(mb.counted for mb in batches) == 0:
            raise ReferenceError(f"{here}: every label is -100: the step's loss would be 0/0")
        parsed.append(batches)

    opt = data.get("optimizer")
    _check_keys(opt, ("lr", "betas", "eps", "weight_decay"), f"{where}: optimizer")
    # torch.optim.AdamW's defaults for what is left out; lr must be given.
    lr = _number(opt.get("lr"), f"{where}: optimizer.lr")
    betas = opt.get("betas", [0.9, 0.999])
    if not isinstance(betas, list) or len(betas) != 2:
        raise ReferenceError(f"{where}: optimizer.betas must be a list of two numbers")
    betas = tuple(_number(v, f"{where}: optimizer.betas[{i}]", 0.0, 1.0) for i, v in enumerate(betas))
    eps = _number(opt.get("eps", 1e-8), f"{where}: optimizer.eps")
    weight_decay = _number(opt.get("weight_decay", 0.01), f"{where}: optimizer.weight_decay")

    sched = data.get("schedule")
    sched = {} if sched is None else sched
    _check_keys(sched, ("name", "warmup_steps", "total_steps", "min_lr"), f"{where}: schedule")
    schedule = {
        "name": sched.get("name", "constant"),
        "warmup_steps": _count(sched.get("warmup_steps", 0), f"{where}: schedule.warmup_steps"),
        "total_steps": _count(sched.get("total_steps", len(parsed)), f"{where}: schedule.total_steps"),
        "min_lr": _number(sched.get("min_lr", 0.0), f"{where}: schedule.min_lr"),
    }
    if schedule["name"] not in SCHEDULES:
        raise ReferenceError(f"{where}: schedule.name {schedule['name']!r} is not one of {', '.join(SCHEDULES)}")

    max_grad_norm = data.get("max_grad_norm")
    max_grad_norm = 0.0 if max_grad_norm is None else _number(max_grad_norm, f"{where}: max_grad_norm")
    return Plan(parsed, lr, betas, eps, weight_decay, schedule, max_grad_norm)


def read_plan(path, vocab_size):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ReferenceError(f"{path}: {e}") from None
    return parse_plan(data, vocab_size, path)


def lr_factor(schedule, step, lr):
    """f(s), the multiplier of lr at optimizer step s (0-based), as HF's LambdaLR schedules
    (get_constant_schedule_with_warmup, get_linear_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup) compute it: s / max(1, W) during warmup (step 0
    uses lr 0); then, with p = (s - W) / max(1, total - W) and r = min_lr / lr, constant 1,
    linear r + (1 - r) max(0, 1 - p), cosine r + (1 - r) (1 + cos(pi min(p, 1))) / 2."""
    warmup = schedule["warmup_steps"]
    if step < warmup:
        return step / max(1, warmup)
    name = schedule["name"]
    if name == "constant":
        return 1.0
    r = schedule["min_lr"] / lr if lr > 0 else 0.0
    p = (step - warmup) / max(1, schedule["total_steps"] - warmup)
    if name == "linear":
        return r + (1 - r) * max(0.0, 1 - p)
    if name == "cosine":
        return r + (1 - r) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))
    raise ReferenceError(f"schedule {name!r} is not one of {', '.join(SCHEDULES)}")


def clip_grad_norm(params, max_norm):
    """torch.nn.utils.clip_grad_norm_ (torch 1.13, 2-norm), written out: the global norm is the
    2-norm of the per-tensor 2-norms; with max_norm > 0 every gradient is multiplied by
    clamp(max_norm / (norm + 1e-6), max=1), computed in the gradients' dtype. Returns the norm
    before clipping, as a float."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach(), 2) for g in grads]), 2)
    if max_norm > 0:
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for g in grads:
            g.detach().mul_(coef)
    return float(norm)


def step_gradients(model, params, micro_batches):
    """Forward and backward of one optimizer step's micro-batches, gradients accumulated in
    .grad (cleared first). Each micro-batch contributes sum(-log p(label)) / N where N counts the
    labels of the whole step, so the step's loss is one mean over all its tokens, whatever the
    split into micro-batches (as HF's Trainer does with num_items_in_batch). Returns (loss, N)."""
    for p in params:
        p.grad = None
    total = sum(mb.counted for mb in micro_batches)
    loss = 0.0
    for mb in micro_batches:
        logits = model_forward(model, mb.input_ids, mb.doc_lens)
        work = logits if logits.dtype == torch.float64 else logits.float()  # HF upcasts the logits
        summed = F.cross_entropy(work.reshape(-1, work.shape[-1]), mb.labels.reshape(-1),
                                 ignore_index=IGNORE_INDEX, reduction="sum")
        part = summed / total
        part.backward()
        loss += float(part)
    return loss, total


def train(model, params, plan):
    """Run the plan on the LoRA parameters (base weights are never trainable here). Returns the
    metrics: per step loss, grad_norm (before clipping), lr, tokens (counted labels); seconds and
    tokens_per_s (all input ids, padding included) over the whole loop."""
    trainable = list(params.values())
    optimizer = torch.optim.AdamW(trainable, lr=plan.lr, betas=plan.betas, eps=plan.eps,
                                  weight_decay=plan.weight_decay)
    metrics = {"loss": [], "grad_norm": [], "lr": [], "tokens": []}
    input_tokens = 0
    start = time.perf_counter()
    for s, micro_batches in enumerate(plan.steps):
        loss, counted = step_gradients(model, trainable, micro_batches)
        if not math.isfinite(loss):
            raise ReferenceError(f"step {s}: loss is {loss}")
        norm = clip_grad_norm(trainable, plan.max_grad_norm)
        lr = plan.lr * lr_factor(plan.schedule, s, plan.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()  # also at lr 0: AdamW's moments and step count still advance, as in HF
        metrics["loss"].append(loss)
        metrics["grad_norm"].append(norm)
        metrics["lr"].append(lr)
        metrics["tokens"].append(counted)
        input_tokens += sum(mb.input_ids.numel() for mb in micro_batches)
    seconds = time.perf_counter() - start
    metrics["seconds"] = seconds
    metrics["tokens_per_s"] = input_tokens / seconds if seconds > 0 else 0.0
    return metrics


def write_atomic(path, data):
    """Write bytes to path through a temporary file, fsync and rename: never a partial file."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------------------------


def read_input(path, vocab_size):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ReferenceError(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise ReferenceError(f"{path}: must be a JSON object")

    def grid(key, allow_ignore):
        return token_grid(data.get(key), f"{path}: {key}", vocab_size, allow_ignore)

    ids = grid("input_ids", False)
    labels = None
    if data.get("labels") is not None:
        labels = grid("labels", True)
        if labels.shape != ids.shape:
            raise ReferenceError(f"{path}: labels {list(labels.shape)} and input_ids {list(ids.shape)} differ in shape")
        if not (labels != IGNORE_INDEX).any():
            raise ReferenceError(f"{path}: every label is -100: the loss would be 0/0")
    return ids, labels


def cmd_forward(args):
    dtype_choice = "float64" if args.float64 else args.dtype
    model = load_model(args.model, dtype_choice)
    ids, labels = read_input(args.input, model.cfg.vocab_size)
    params = {}
    if args.adapter:
        params = load_adapter(args.adapter, model)
        if args.merge:
            for lin in model.linear_modules().values():
                if lin.lora is not None:
                    merge_lora(lin)
    elif args.merge:
        raise ReferenceError("--merge needs --adapter")

    grad_enabled = bool(params) and labels is not None
    with torch.set_grad_enabled(grad_enabled):
        logits = model_forward(model, ids)
        out_dtype = torch.float64 if args.output_f64 else torch.float32
        out = {"logits": logits.detach().to(out_dtype)}
        if labels is not None:
            loss, logprobs = causal_lm_loss(logits, labels)
            out["logprobs"] = logprobs.detach().to(out_dtype)
            out["loss"] = loss.detach().to(out_dtype).reshape([])
            if grad_enabled:
                grads = torch.autograd.grad(loss, list(params.values()))
                for name, g in zip(params, grads):
                    out[name] = g.detach().to(out_dtype)
    safetensors_io.save(out, args.output)


def cmd_fisher(args):
    """The diagonal empirical Fisher of the LoRA parameters: for each row of the input on its own,
    the gradient of its loss (the mean -log p over its counted tokens), squared, averaged over
    the rows that have a counted token. Rows with none are left out of the mean."""
    dtype_choice = "float64" if args.float64 else "float32"
    model = load_model(args.model, dtype_choice)
    ids, labels = read_input(args.input, model.cfg.vocab_size)
    if labels is None:
        raise ReferenceError("fisher needs labels")
    params = load_adapter(args.adapter, model)
    names = list(params)
    sums = {name: torch.zeros_like(p) for name, p in params.items()}
    used = 0
    for i in range(ids.shape[0]):
        row_labels = labels[i:i + 1]
        if not bool((row_labels != -100).any()):
            continue
        logits = model_forward(model, ids[i:i + 1])
        loss, _ = causal_lm_loss(logits, row_labels)
        grads = torch.autograd.grad(loss, [params[n] for n in names])
        for name, g in zip(names, grads):
            sums[name] += g.detach() ** 2
        used += 1
    if used == 0:
        raise ReferenceError("no row has a counted token")
    out = {name: (sums[name] / used).to(torch.float64 if args.output_f64 else torch.float32) for name in names}
    safetensors_io.save(out, args.output)


def cmd_make_adapter(args):
    model = load_model(args.model, "float32")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets:
        raise ReferenceError("--targets is empty")
    if args.rank <= 0:
        raise ReferenceError("--rank must be positive")
    alpha = int(args.alpha) if float(args.alpha).is_integer() else float(args.alpha)
    acfg = peft_adapter_config(args.model, args.rank, alpha, targets, args.rslora)
    chosen = adapter_targets(acfg, model)

    generator = torch.Generator().manual_seed(args.seed)
    linears = model.linear_modules()
    tensors = {}
    for name in chosen:
        lin = linears[name]
        # reset_lora_parameters: kaiming_uniform_(A, a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)).
        # (PEFT initialises B to zero; a random B makes parity tests see the adapter.)
        bound = 1.0 / math.sqrt(lin.in_features)
        A = torch.empty(args.rank, lin.in_features).uniform_(-bound, bound, generator=generator)
        B = torch.empty(lin.out_features, args.rank)
        if args.b_std > 0:
            B.normal_(0.0, args.b_std, generator=generator)
        else:
            B.zero_()
        tensors[peft_param_name(name, "A")] = A
        tensors[peft_param_name(name, "B")] = B

    os.makedirs(args.output, exist_ok=True)
    safetensors_io.save(tensors, os.path.join(args.output, ADAPTER_WEIGHTS), {"format": "pt"})
    tmp = os.path.join(args.output, ADAPTER_CONFIG + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(acfg, indent=2, sort_keys=True))
    os.replace(tmp, os.path.join(args.output, ADAPTER_CONFIG))


def cmd_train_bench(args):
    if args.steps < 1 or args.batch < 1 or args.seq < 1:
        raise ReferenceError("--steps, --batch and --seq must be positive")
    model = load_model(args.model, args.dtype)
    params = load_adapter(args.adapter, model)
    optimizer = torch.optim.AdamW(list(params.values()), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    vocab = model.cfg.vocab_size

    def step():
        ids = torch.randint(vocab, (args.batch, args.seq), generator=generator)
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[:, :-1] = ids[:, 1:]  # next-token targets, aligned with positions
        optimizer.zero_grad(set_to_none=True)
        loss, _ = causal_lm_loss(model_forward(model, ids), labels)
        loss.backward()
        optimizer.step()
        return float(loss)

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    print(json.dumps({
        "tokens_per_s": args.batch * args.seq / seconds,
        "seconds_per_step": seconds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": args.batch,
        "seq": args.seq,
        "steps": args.steps,
        "dtype": str(model.dtype).replace("torch.", ""),
    }))


def cmd_train(args):
    model = load_model(args.model, args.dtype)
    params = load_adapter(args.adapter, model)
    try:
        with open(os.path.join(args.adapter, ADAPTER_CONFIG), "rb") as f:
            adapter_config = f.read()  # copied as is into the output
    except OSError as e:
        raise ReferenceError(str(e)) from None
    plan = read_plan(args.plan, model.cfg.vocab_size)

    metrics = train(model, params, plan)
    metrics["torch"] = torch.__version__
    metrics["threads"] = torch.get_num_threads()
    metrics["dtype"] = str(model.dtype).replace("torch.", "")

    try:
        os.makedirs(args.output, exist_ok=True)
        trained = {name: p.detach().to(torch.float32).contiguous() for name, p in params.items()}
        safetensors_io.save(trained, os.path.join(args.output, ADAPTER_WEIGHTS), {"format": "pt"})
        write_atomic(os.path.join(args.output, ADAPTER_CONFIG), adapter_config)
        write_atomic(os.path.join(args.output, "metrics.json"),
                     (json.dumps(metrics, indent=1, allow_nan=False) + "\n").encode())
    except OSError as e:
        raise ReferenceError(f"writing {args.output}: {e}") from None


def attention_cached(cfg, layer, x, cos, sin, cache, start):
    """attention() for generation with a KV cache (HF's DynamicCache): the new tokens' keys and
    values [B, KV, t, D] (after RoPE) are appended to cache (a [k, v] list, empty at first) and
    query i, at position start + i, attends to cached keys 0..start+i."""
    b, t, _ = x.shape
    if cfg.family == "phi3":
        qkv = linear(x, layer["qkv_proj"])
        q = qkv[..., :cfg.q_size]
        k = qkv[..., cfg.q_size:cfg.q_size + cfg.kv_size]
        v = qkv[..., cfg.q_size + cfg.kv_size:]
    else:
        q, k, v = linear(x, layer["q_proj"]), linear(x, layer["k_proj"]), linear(x, layer["v_proj"])
    q = apply_rope(q.view(b, t, cfg.num_heads, cfg.head_dim).transpose(1, 2), cos, sin)
    k = apply_rope(k.view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2), cos, sin)
    v = v.view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
    if cache:
        k, v = torch.cat((cache[0], k), dim=2), torch.cat((cache[1], v), dim=2)
    cache[:] = [k, v]
    n_rep = cfg.num_heads // cfg.num_kv_heads
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    scores = torch.matmul(q, k.transpose(2, 3)) * cfg.head_dim ** -0.5
    i = torch.arange(t)[:, None] + start
    j = torch.arange(start + t)[None, :]
    scores = scores.masked_fill(j > i, torch.finfo(scores.dtype).min)
    probs = F.softmax(scores, dim=-1, dtype=upcast_dtype(q.dtype)).to(q.dtype)
    out = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, cfg.q_size)
    return linear(out, layer["o_proj"])


def cached_step(model, ids, caches, start):
    """Runs ids [B, t] at positions start.. against the per-layer caches (updated); returns the
    logits of the last position [B, V]."""
    cfg = model.cfg
    b, t = ids.shape
    h = F.embedding(ids, model.embed)
    positions = (torch.arange(t) + start)[None, :].expand(b, t)
    cos, sin = rope_cos_sin(cfg, positions, model.dtype)
    for layer, cache in zip(model.layers, caches):
        x = rms_norm(h, layer["input_layernorm"], cfg.rms_norm_eps)
        h = h + attention_cached(cfg, layer, x, cos, sin, cache, start)
        x = rms_norm(h, layer["post_attention_layernorm"], cfg.rms_norm_eps)
        h = h + mlp(cfg, layer, x)
    h = rms_norm(h[:, -1:], model.norm, cfg.rms_norm_eps)
    return linear(h, model.lm_head)[:, 0]


def cmd_generate_bench(args):
    """Greedy decoding with a KV cache, timed: the prefill of the prompts (one forward) and the
    decode steps (one token per prompt each). Prompts of equal length, no sampling, no stops."""
    if args.new_tokens < 1:
        raise ReferenceError("--new-tokens must be positive")
    if args.repeats < 1:
        raise ReferenceError("--repeats must be positive")
    model = load_model(args.model, args.dtype)
    try:
        with open(args.input) as f:
            prompts = json.load(f)["input_ids"]
    except (OSError, ValueError, KeyError) as e:
        raise ReferenceError(f"{args.input}: {e}") from None
    if not prompts or len({len(p) for p in prompts}) != 1 or not prompts[0]:
        raise ReferenceError("input_ids must be non-empty rows of one length")
    ids = token_grid(prompts, "input_ids", model.cfg.vocab_size, False)
    b, t = ids.shape
    prefills, decodes = [], []
    with torch.inference_mode():
        cached_step(model, ids[:, :8], [[] for _ in model.layers], 0)  # warm-up
        for _ in range(args.repeats):  # a fresh cache each time; the medians are reported
            caches = [[] for _ in model.layers]
            begin = time.perf_counter()
            logits = cached_step(model, ids, caches, 0)
            prefills.append(time.perf_counter() - begin)
            generated = []
            begin = time.perf_counter()
            for step in range(args.new_tokens):
                nxt = logits.argmax(dim=-1)
                generated.append(nxt)
                if step + 1 < args.new_tokens:
                    logits = cached_step(model, nxt[:, None], caches, t + step)
            decodes.append(time.perf_counter() - begin)
    prefill = sorted(prefills)[len(prefills) // 2]
    decode = sorted(decodes)[len(decodes) // 2]
    print(json.dumps({
        "prefill_tokens_per_s": b * t / prefill,
        "decode_tokens_per_s": b * (args.new_tokens - 1) / decode if args.new_tokens > 1 else 0.0,
        "generated": torch.stack(generated, dim=1).tolist(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


def build_parser():
    parser = argparse.ArgumentParser(prog="reference.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    fwd = sub.add_parser("forward", help="logits, loss, log-probs and LoRA gradients of a batch")
    fwd.add_argument("--model", required=True, help="checkpoint directory (config.json, *.safetensors)")
    fwd.add_argument("--adapter", help="PEFT LoRA adapter directory")
    fwd.add_argument("--input", required=True, help='JSON {"input_ids": [[...]], "labels": [[...]]}')
    fwd.add_argument("--output", required=True, help="safetensors file to write")
    fwd.add_argument("--merge", action="store_true", help="merge the adapter into the weights (W += s B A)")
    fwd.add_argument("--float64", action="store_true", help="compute in float64 (same as --dtype float64)")
    fwd.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float64"],
                     help="compute dtype (auto: the weights' dtype)")
    fwd.add_argument("--output-f64", action="store_true", help="write F64 tensors instead of F32")
    fwd.add_argument("--threads", type=int, default=0, help="torch threads")

    fi = sub.add_parser("fisher", help="diagonal empirical Fisher of the LoRA parameters: mean of squared per-row gradients")
    fi.add_argument("--model", required=True)
    fi.add_argument("--adapter", required=True)
    fi.add_argument("--input", required=True, help='JSON {"input_ids": [[...]], "labels": [[...]]}: one example per row')
    fi.add_argument("--output", required=True, help="safetensors file: one tensor per LoRA parameter, PEFT names")
    fi.add_argument("--float64", action="store_true", help="compute in float64")
    fi.add_argument("--output-f64", action="store_true", help="write F64 tensors instead of F32")
    fi.add_argument("--threads", type=int, default=0)

    mk = sub.add_parser("make-adapter", help="write a seeded PEFT LoRA adapter for a checkpoint")
    mk.add_argument("--model", required=True)
    mk.add_argument("--output", required=True)
    mk.add_argument("--rank", type=int, required=True)
    mk.add_argument("--alpha", type=float, required=True)
    mk.add_argument("--targets", required=True, help="comma-separated module names, e.g. q_proj,v_proj")
    mk.add_argument("--rslora", action="store_true", help="scaling alpha/sqrt(r)")
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--b-std", type=float, default=0.02, help="std of B (0: zeros, as PEFT)")
    mk.add_argument("--threads", type=int, default=0)

    tb = sub.add_parser("train-bench", help="time LoRA training steps (forward, loss, backward, AdamW)")
    tb.add_argument("--model", required=True)
    tb.add_argument("--adapter", required=True)
    tb.add_argument("--batch", type=int, default=4)
    tb.add_argument("--seq", type=int, default=256)
    tb.add_argument("--steps", type=int, default=3)
    tb.add_argument("--threads", type=int, default=0)
    tb.add_argument("--lr", type=float, default=1e-4)
    tb.add_argument("--seed", type=int, default=0)
    tb.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float64"])

    tr = sub.add_parser("train", help="LoRA training by a plan of batches; metrics and the trained adapter")
    tr.add_argument("--model", required=True, help="checkpoint directory")
    tr.add_argument("--adapter", required=True, help="initial PEFT LoRA adapter directory")
    tr.add_argument("--plan", required=True, help="PLAN.json: steps of micro-batches, optimizer, schedule")
    tr.add_argument("--output", required=True, help="directory for metrics.json and the trained adapter")
    tr.add_argument("--threads", type=int, default=0, help="torch threads")
    tr.add_argument("--dtype", default="auto", choices=["auto", "float32", "float64"],
                    help="compute dtype (auto: the weights' dtype)")

    gb = sub.add_parser("generate-bench", help="time KV-cached greedy decoding: prefill and decode tokens/s")
    gb.add_argument("--model", required=True)
    gb.add_argument("--input", required=True, help='JSON {"input_ids": [[...], ...]}, rows of one length')
    gb.add_argument("--new-tokens", type=int, default=32)
    gb.add_argument("--repeats", type=int, default=1, help="timed runs; the median times are reported")
    gb.add_argument("--threads", type=int, default=0)
    gb.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    en = sub.add_parser("encode", help="XLM-R / BERT encoder: last hidden states and pooled embeddings")
    en.add_argument("--model", required=True, help="checkpoint directory (config.json, *.safetensors)")
    en.add_argument("--input", required=True, help='JSON {"input_ids": [[...], ...]}: rows of any lengths')
    en.add_argument("--output", required=True, help="safetensors file to write")
    en.add_argument("--float64", action="store_true", help="compute in float64")
    en.add_argument("--output-f64", action="store_true", help="write F64 tensors instead of F32")
    en.add_argument("--threads", type=int, default=0)

    eb = sub.add_parser("encode-bench", help="time encoder forward passes with mean pooling: texts/s, tokens/s")
    eb.add_argument("--model", required=True)
    eb.add_argument("--batch", type=int, default=16)
    eb.add_argument("--seq", type=int, default=64)
    eb.add_argument("--steps", type=int, default=5)
    eb.add_argument("--seed", type=int, default=0)
    eb.add_argument("--threads", type=int, default=0)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    try:
        commands = {"forward": cmd_forward, "fisher": cmd_fisher, "make-adapter": cmd_make_adapter, "train-bench": cmd_train_bench,
                    "train": cmd_train, "generate-bench": cmd_generate_bench,
                    "encode": encoder.cmd_encode, "encode-bench": encoder.cmd_encode_bench}
        commands[args.command](args)
    except (ReferenceError, encoder.EncoderError) as e:
        print(f"reference: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
