#!/usr/bin/python3
"""Self-test of the reference: /usr/bin/python3 tools/reference/selftest.py

Checks the pieces against independent formulations (complex-number RoPE, a per-head loop
attention, unfused vs fused projections, repeated vs grouped kv heads), LoRA against its
definition (B = 0 is the base model, merged == unmerged, gradients == finite differences in
float64), the safetensors reader/writer, PEFT's target matching, and the CLI end to end.
Tiny random checkpoints are written to a temporary directory and removed afterwards.
Prints one line per test and "N passed, M failed"; exits 1 on any failure.
"""

import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import traceback

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference as ref  # noqa: E402
import safetensors_io as st  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
TMP = tempfile.TemporaryDirectory(prefix="compass-reference-selftest-")

BASE = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=41, max_position_embeddings=128, rms_norm_eps=1e-5,
            hidden_act="silu")
LLAMA = dict(BASE, architectures=["LlamaForCausalLM"], model_type="llama", rope_theta=10000.0,
             tie_word_embeddings=False)
QWEN2 = dict(BASE, architectures=["Qwen2ForCausalLM"], model_type="qwen2", rope_theta=1e6,
             tie_word_embeddings=True)
PHI3 = dict(BASE, architectures=["Phi3ForCausalLM"], model_type="phi3", rope_theta=10000.0,
            partial_rotary_factor=0.75, original_max_position_embeddings=6, tie_word_embeddings=True,
            rope_scaling={"type": "longrope", "short_factor": [1.0, 1.2, 1.5],
                          "long_factor": [1.0, 3.0, 9.0]})


def write_model(name, config, tensors=None, seed=0):
    """Write config.json and random float32 weights (or the given ones) to TMP/name."""
    d = os.path.join(TMP.name, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f)
    if tensors is None:
        cfg = ref.load_config(d)
        g = torch.Generator().manual_seed(seed)
        tensors = {}
        for n, shape in ref.expected_tensors(cfg).items():
            if n.endswith("norm.weight"):
                tensors[n] = 1 + 0.1 * torch.randn(shape, generator=g)
            else:
                tensors[n] = 0.3 * torch.randn(shape, generator=g)
    st.save(tensors, os.path.join(d, "model.safetensors"))
    return d


def write_adapter(name, model_dir, targets, r=3, alpha=6, b_std=0.1, seed=1, rslora=False):
    out = os.path.join(TMP.name, name)
    args = ref.build_parser().parse_args(
        ["make-adapter", "--model", model_dir, "--output", out, "--rank", str(r), "--alpha", str(alpha),
         "--targets", ",".join(targets), "--seed", str(seed), "--b-std", str(b_std)] + (["--rslora"] if rslora else []))
    ref.cmd_make_adapter(args)
    return out


def ids(b=2, t=9, vocab=41, seed=3):
    return torch.randint(vocab, (b, t), generator=torch.Generator().manual_seed(seed))


def labels_for(x):
    lab = torch.full_like(x, ref.IGNORE_INDEX)
    lab[:, :-1] = x[:, 1:]
    lab[0, 0] = ref.IGNORE_INDEX
    return lab


def close(a, b, tol, what):
    err = (a - b).abs().max().item()
    assert err <= tol, f"{what}: max abs diff {err:.3g} > {tol:.3g}"
    return err


# ---------------------------------------------------------------------------- safetensors


def test_safetensors_round_trip():
    g = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(3, 5, generator=g),
        "bf16": torch.randn(4, 3, generator=g).to(torch.bfloat16),
        "f16": torch.randn(7, generator=g).to(torch.float16),
        "f64": torch.randn(2, 2, generator=g).double(),
        "i32": torch.arange(-5, 7, dtype=torch.int32).reshape(3, 4),
        "i64": torch.tensor([-(2 ** 40), 0, 2 ** 40]),
        "u8": torch.arange(256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.25),
        "empty": torch.empty(0, 4),
    }
    path = os.path.join(TMP.name, "rt.safetensors")
    st.save(tensors, path)
    back, meta = st.load(path)
    assert meta == {"format": "pt"}, meta
    assert set(back) == set(tensors)
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and back[k].shape == t.shape, k
        assert torch.equal(back[k], t), k
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = f.read(n)
    assert n % 8 == 0 and header.startswith(b'{"__metadata__":{"format":"pt"}'), header[:40]
    order = [k for k in json.loads(header) if k != "__metadata__"]
    # safetensors' layout: descending dtype, then name.
    assert order == ["i64", "f64", "empty", "f32", "scalar", "i32", "bf16", "f16", "u8", "bool"], order


def _raw_file(header, data=b""):
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_safetensors_rejects_bad_files():
    t = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    cases = {
        "gap": _raw_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
        "overlap": _raw_file({"a": t, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
        "trailing bytes": _raw_file({"a": t}, b"\0" * 12),
        "short data": _raw_file({"a": t}, b"\0" * 4),
        "wrong length": _raw_file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
        "unknown dtype": _raw_file({"a": {"dtype": "F31", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
        "negative dim": _raw_file({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8),
        "huge header": struct.pack("<Q", 100_000_001) + b"{}",
        "header past end": struct.pack("<Q", 64) + b"{}",
        "not json": struct.pack("<Q", 3) + b"{x}",
        "duplicate": None,
    }
    raw = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    cases["duplicate"] = struct.pack("<Q", len(raw)) + raw + b"\0" * 8
    for what, blob in cases.items():
        path = os.path.join(TMP.name, "bad.safetensors")
        with open(path, "wb") as f:
            f.write(blob)
        try:
            st.load(path)
        except st.SafetensorsError:
            continue
        raise AssertionError(f"{what}: accepted")


# ---------------------------------------------------------------------------- RoPE


def test_default_rope_is_an_orthogonal_rotation():
    cfg = ref.Config(dict(LLAMA, head_dim=12))
    t = 7
    cos, sin = ref.rope_cos_sin(cfg, torch.arange(t)[None], torch.float64)
    eye = torch.eye(12, dtype=torch.float64)  # rows: basis vectors
    for p in range(t):
        x = eye[None, None].expand(1, 1, 12, 12).clone()  # [B=1, H=1, T=12 vectors, D]
        rot = ref.apply_rope(x, cos[:, p:p + 1].expand(1, 12, 12), sin[:, p:p + 1].expand(1, 12, 12))[0, 0]
        close(rot @ rot.T, eye, 1e-12, f"R R^T at position {p}")
        assert torch.det(rot) > 0


def test_rope_matches_complex_rotation():
    # rotate_half layout: dim i pairs with i + d/2, rotated by angle position * inv_freq_i.
    cfg = ref.Config(dict(PHI3, head_dim=16, rope_scaling={  # partial: 12 of 16 dims rotate
        "type": "longrope", "short_factor": [1.0] * 6, "long_factor": [1.0, 1.5, 2.0, 4.0, 8.0, 9.5]}))
    t, d, r = 10, 16, cfg.rotary_dims
    x = torch.randn(2, 3, t, d, dtype=torch.float64)
    cos, sin = ref.rope_cos_sin(cfg, torch.arange(t)[None].expand(2, t), torch.float64)
    got = ref.apply_rope(x, cos, sin)
    inv, factor = ref.rope_parameters(cfg, t)
    angle = torch.arange(t, dtype=torch.float64)[:, None] * inv.double()[None]
    z = torch.complex(x[..., : r // 2], x[..., r // 2: r]) * torch.polar(torch.full_like(angle, factor), angle)
    want = torch.cat((z.real, z.imag, x[..., r:]), dim=-1)
    close(got, want, 1e-12, "complex rotation")


def test_rope_relative_position():
    cfg = ref.Config(LLAMA)
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    cos, sin = ref.rope_cos_sin(cfg, torch.arange(20)[None], torch.float64)

    def at(v, p):
        return ref.apply_rope(v[None, None, None], cos[:, p:p + 1], sin[:, p:p + 1])[0, 0, 0]

    dots = [float(at(q, m) @ at(k, m - 3)) for m in (3, 7, 19)]
    assert max(dots) - min(dots) < 1e-12, dots


def test_llama3_inv_freq_bands():
    cfg = ref.Config(dict(LLAMA, head_dim=16, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}))
    got = ref.llama3_inv_freq(cfg).double()
    base = 1.0 / 500000.0 ** (torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    bands = []
    for i, f in enumerate(base.tolist()):
        wavelen = 2 * math.pi / f
        if wavelen < 8192 / 4:
            want, band = f, "high"
        elif wavelen > 8192 / 1:
            want, band = f / 8, "low"
        else:
            s = (8192 / wavelen - 1) / (4 - 1)
            want, band = (1 - s) * f / 8 + s * f, "medium"
        bands.append(band)
        assert abs(got[i].item() - want) <= 1e-6 * want, (i, got[i].item(), want)
    assert set(bands) == {"high", "medium", "low"}, bands


def test_longrope_short_long_and_attention_factor():
    cfg = ref.Config(PHI3)  # original 6, max 128
    short = ref.rope_parameters(cfg, 6)[0]
    long_ = ref.rope_parameters(cfg, 7)[0]
    plain = ref.default_inv_freq(cfg.rope_theta, cfg.rotary_dims)
    close(short, plain / torch.tensor([1.0, 1.2, 1.5]), 1e-7, "short factors at seq_len == original")
    close(long_, plain / torch.tensor([1.0, 3.0, 9.0]), 1e-7, "long factors at seq_len == original + 1")
    want = math.sqrt(1 + math.log(128 / 6) / math.log(6))
    assert abs(ref.longrope_attention_factor(cfg) - want) < 1e-15
    # cos/sin of a 7-token batch use the long factors and the attention factor.
    cos, _ = ref.rope_cos_sin(cfg, torch.arange(7)[None], torch.float64)
    close(cos[0, 6, :3], torch.cos(6 * long_.double()) * want, 1e-12, "cos at T=7")


def test_published_configs():
    d = os.path.join(REPO, "testdata", "configs")
    # The published configs are part of the repository: their absence is a
    # broken checkout, not a reason to pass without checking anything.
    if not os.path.isdir(d):
        raise AssertionError(f"{d} is missing: the published configs (testdata/configs) are part of the repository")
    with open(os.path.join(d, "phi-4-mini-instruct.json")) as f:
        phi = ref.Config(json.load(f))
    assert phi.rotary_dims == 96 and phi.rope_type == "longrope"
    assert abs(ref.longrope_attention_factor(phi) - math.sqrt(1 + math.log(32) / math.log(4096))) < 1e-15
    assert torch.equal(ref.rope_parameters(phi, 4096)[0], ref.default_inv_freq(10000.0, 96))  # short = 1.0
    with open(os.path.join(d, "llama-3.1-8b.json")) as f:
        llama = ref.Config(json.load(f))
    assert llama.rope_type == "llama3" and llama.head_dim == 128 and not llama.qkv_bias
    with open(os.path.join(d, "qwen2.5-7b.json")) as f:
        qwen = ref.Config(json.load(f))
    assert qwen.qkv_bias and not qwen.o_bias and qwen.sliding_windows == [None] * 28


def test_unknown_rope_type_is_an_error():
    for rope in ({"rope_type": "yarn", "factor": 4.0}, {"rope_type": "dynamic", "factor": 2.0}):
        try:
            ref.Config(dict(LLAMA, rope_scaling=rope))
        except ref.ReferenceError:
            continue
        raise AssertionError(f"{rope} accepted")


# ---------------------------------------------------------------------------- the model


def naive_forward(model, x):
    """A second, loop-based decoder: per head, per query position, explicit kv head choice."""
    cfg = model.cfg
    b, t = x.shape
    h = model.embed[x]
    cos, sin = ref.rope_cos_sin(cfg, torch.arange(t)[None].expand(b, t), model.dtype)
    group = cfg.num_heads // cfg.num_kv_heads
    for li, layer in enumerate(model.layers):
        window = cfg.sliding_windows[li]
        n = h.pow(2).mean(-1, keepdim=True)
        xin = h * torch.rsqrt(n + cfg.rms_norm_eps) * layer["input_layernorm"]
        if cfg.family == "phi3":
            qkv = ref.linear(xin, layer["qkv_proj"])
            q, k, v = qkv.split([cfg.q_size, cfg.kv_size, cfg.kv_size], dim=-1)
        else:
            q, k, v = (ref.linear(xin, layer[p]) for p in ("q_proj", "k_proj", "v_proj"))
        q = ref.apply_rope(q.view(b, t, -1, cfg.head_dim).transpose(1, 2), cos, sin)
        k = ref.apply_rope(k.view(b, t, -1, cfg.head_dim).transpose(1, 2), cos, sin)
        v = v.view(b, t, -1, cfg.head_dim).transpose(1, 2)
        out = torch.zeros(b, cfg.num_heads, t, cfg.head_dim, dtype=h.dtype)
        for head in range(cfg.num_heads):
            kvh = head // group
            for i in range(t):
                lo = 0 if window is None else max(0, i - window + 1)
                s = (k[:, kvh, lo:i + 1] @ q[:, head, i].unsqueeze(-1)).squeeze(-1) / math.sqrt(cfg.head_dim)
                out[:, head, i] = (torch.softmax(s, -1).unsqueeze(-1) * v[:, kvh, lo:i + 1]).sum(1)
        h = h + ref.linear(out.transpose(1, 2).reshape(b, t, -1), layer["o_proj"])
        n = h.pow(2).mean(-1, keepdim=True)
        xin = h * torch.rsqrt(n + cfg.rms_norm_eps) * layer["post_attention_layernorm"]
        if cfg.family == "phi3":
            gate, up = ref.linear(xin, layer["gate_up_proj"]).split(cfg.intermediate_size, dim=-1)
        else:
            gate, up = ref.linear(xin, layer["gate_proj"]), ref.linear(xin, layer["up_proj"])
        h = h + ref.linear(gate * torch.sigmoid(gate) * up, layer["down_proj"])
    n = h.pow(2).mean(-1, keepdim=True)
    return ref.linear(h * torch.rsqrt(n + cfg.rms_norm_eps) * model.norm, model.lm_head)


def test_forward_matches_naive_loops():
    variants = {
        "llama": LLAMA,
        "llama_bias_gqa4": dict(LLAMA, num_key_value_heads=1, attention_bias=True, mlp_bias=True, head_dim=12),
        "qwen2_swa": dict(QWEN2, use_sliding_window=True, sliding_window=3, max_window_layers=1),
        "phi3": PHI3,
        "phi3_window": dict(PHI3, sliding_window=4),
    }
    for name, config in variants.items():
        model = ref.load_model(write_model(f"naive_{name}", config), "float64")
        x = ids(t=8)
        close(ref.model_forward(model, x), naive_forward(model, x), 1e-10, name)


def test_sliding_window_at_least_t_is_full_attention():
    full = ref.load_model(write_model("swa_full", QWEN2, seed=5), "float64")
    wide = ref.load_model(write_model("swa_wide", dict(QWEN2, use_sliding_window=True, sliding_window=9,
                                                       max_window_layers=0), seed=5), "float64")
    narrow = ref.load_model(write_model("swa_narrow", dict(QWEN2, use_sliding_window=True, sliding_window=8,
                                                           max_window_layers=0), seed=5), "float64")
    x = ids(t=9)
    close(ref.model_forward(wide, x), ref.model_forward(full, x), 0, "window 9 over 9 tokens")
    assert (ref.model_forward(narrow, x) - ref.model_forward(full, x)).abs().max() > 1e-6


def test_gqa_equals_repeated_kv_heads():
    gqa_dir = write_model("gqa", dict(LLAMA, num_key_value_heads=2), seed=7)
    tensors, _ = st.load(os.path.join(gqa_dir, "model.safetensors"))
    mha = dict(tensors)
    for i in range(2):
        for p in ("k_proj", "v_proj"):
            w = tensors[f"model.layers.{i}.self_attn.{p}.weight"].view(2, 8, 32)  # [kv, D, in]
            mha[f"model.layers.{i}.self_attn.{p}.weight"] = w.repeat_interleave(2, dim=0).reshape(32, 32)
    mha_dir = write_model("mha", dict(LLAMA, num_key_value_heads=4), tensors=mha)
    x = ids()
    a = ref.model_forward(ref.load_model(gqa_dir, "float64"), x)
    b = ref.model_forward(ref.load_model(mha_dir, "float64"), x)
    close(a, b, 1e-12, "GQA vs repeated heads")


def test_phi3_fused_equals_llama_split():
    phi = dict(PHI3, partial_rotary_factor=1.0, rope_scaling=None, tie_word_embeddings=False)
    phi_dir = write_model("fused", phi, seed=9)
    t, _ = st.load(os.path.join(phi_dir, "model.safetensors"))
    split = {k: v for k, v in t.items() if "qkv_proj" not in k and "gate_up_proj" not in k}
    for i in range(2):
        p = f"model.layers.{i}"
        q, k, v = t[f"{p}.self_attn.qkv_proj.weight"].split([32, 16, 16])
        split[f"{p}.self_attn.q_proj.weight"], split[f"{p}.self_attn.k_proj.weight"] = q, k
        split[f"{p}.self_attn.v_proj.weight"] = v
        gate, up = t[f"{p}.mlp.gate_up_proj.weight"].split([48, 48])
        split[f"{p}.mlp.gate_proj.weight"], split[f"{p}.mlp.up_proj.weight"] = gate, up
    llama_dir = write_model("split", dict(LLAMA, rms_norm_eps=1e-5), tensors=split)
    x = ids()
    a = ref.model_forward(ref.load_model(phi_dir, "float64"), x)
    b = ref.model_forward(ref.load_model(llama_dir, "float64"), x)
    close(a, b, 1e-12, "fused Phi-3 vs split Llama")


def test_loss_is_mean_over_counted_positions():
    model = ref.load_model(write_model("loss", LLAMA), "float64")
    x = ids()
    lab = labels_for(x)
    logits = ref.model_forward(model, x)
    loss, logprobs = ref.causal_lm_loss(logits, lab)
    counted = lab != ref.IGNORE_INDEX
    want = -torch.log_softmax(logits, -1).gather(-1, lab.clamp(min=0)[..., None])[..., 0][counted].mean()
    assert abs(loss.item() - want.item()) < 1e-12
    assert (logprobs[~counted] == 0).all() and (logprobs[counted] < 0).all()


# ---------------------------------------------------------------------------- LoRA


def _forward_with_adapter(model_dir, adapter_dir, dtype, merge=False):
    model = ref.load_model(model_dir, dtype)
    params = ref.load_adapter(adapter_dir, model)
    if merge:
        for lin in model.linear_modules().values():
            if lin.lora is not None:
                ref.merge_lora(lin)
    return model, params


def test_lora_with_zero_b_is_the_base_model():
    for name, config, targets in (("llama", LLAMA, ["q_proj", "v_proj", "down_proj"]),
                                  ("phi3", PHI3, ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])):
        d = write_model(f"zb_{name}", config)
        a = write_adapter(f"zb_{name}_adapter", d, targets, b_std=0)
        x = ids()
        base = ref.model_forward(ref.load_model(d, "float32"), x)
        model, _ = _forward_with_adapter(d, a, "float32")
        close(ref.model_forward(model, x), base, 0, f"{name}: B=0")


def test_merged_equals_unmerged():
    for name, config, targets in (("qwen2", QWEN2, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                    "up_proj", "down_proj"]),
                                  ("phi3", PHI3, ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])):
        d = write_model(f"merge_{name}", config)
        a = write_adapter(f"merge_{name}_adapter", d, targets, b_std=0.2, rslora=True)
        x = ids()
        lab = labels_for(x)
        results = []
        for merge in (False, True):
            model, params = _forward_with_adapter(d, a, "float64", merge)
            loss, _ = ref.causal_lm_loss(ref.model_forward(model, x), lab)
            grads = torch.autograd.grad(loss, list(params.values()))
            results.append((ref.model_forward(model, x), grads))
        close(results[0][0], results[1][0], 1e-11, f"{name}: logits")
        for g0, g1 in zip(results[0][1], results[1][1]):
            close(g0, g1, 1e-11, f"{name}: gradients")


def test_gradients_match_finite_differences():
    for name, config, targets in (("llama", dict(LLAMA, rope_theta=500000.0, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16}), ["q_proj", "v_proj", "up_proj"]),
            ("phi3", PHI3, ["qkv_proj", "gate_up_proj"])):
        d = write_model(f"fd_{name}", config)
        a = write_adapter(f"fd_{name}_adapter", d, targets, b_std=0.2)
        model, params = _forward_with_adapter(d, a, "float64")
        x = ids()
        lab = labels_for(x)

        def loss_value():
            with torch.no_grad():
                return ref.causal_lm_loss(ref.model_forward(model, x), lab)[0].item()

        loss, _ = ref.causal_lm_loss(ref.model_forward(model, x), lab)
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
        g = torch.Generator().manual_seed(4)
        for pname, p in params.items():
            for _ in range(2):
                idx = tuple(int(torch.randint(s, (1,), generator=g)) for s in p.shape)
                eps = 1e-6
                with torch.no_grad():
                    old = p[idx].item()
                    p[idx] = old + eps
                    up = loss_value()
                    p[idx] = old - eps
                    down = loss_value()
                    p[idx] = old
                fd = (up - down) / (2 * eps)
                an = grads[pname][idx].item()
                assert abs(fd - an) <= 1e-7 + 1e-6 * abs(an), f"{name} {pname}{idx}: fd {fd} vs autograd {an}"


def test_peft_target_matching():
    model = ref.load_model(write_model("match", LLAMA), "float32")
    linears = model.linear_modules()

    def chosen(**acfg):
        return ref.adapter_targets(dict({"target_modules": None}, **acfg), model)

    assert chosen() == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                        "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]  # PEFT default
    assert chosen(target_modules=["q_proj"], layers_to_transform=[1]) == ["model.layers.1.self_attn.q_proj"]
    assert chosen(target_modules=r".*\.1\.mlp\.(up|down)_proj") == ["model.layers.1.mlp.up_proj",
                                                                     "model.layers.1.mlp.down_proj"]
    try:
        chosen(target_modules="up_proj")
        raise AssertionError("a regex must match the whole name")
    except ref.ReferenceError:
        pass
    everything = chosen(target_modules="all-linear")
    assert len(everything) == 14 and "lm_head" not in everything
    assert chosen(target_modules=["lm_head"]) == ["lm_head"]
    assert len(chosen(target_modules="all-linear", exclude_modules=["o_proj"])) == 12
    try:
        chosen(target_modules=["mlp"])
        raise AssertionError("a non-Linear target must be refused")
    except ref.ReferenceError:
        pass
    assert ref.peft_pattern_value({"q_proj": 16, "layers.1.v_proj": 2}, "model.layers.1.v_proj", 8) == 2
    assert ref.peft_pattern_value({"q_proj": 16}, "model.layers.0.self_attn.q_proj", 8) == 16
    assert ref.peft_pattern_value({"q_proj": 16}, "model.layers.0.self_attn.k_proj", 8) == 8
    assert set(linears) >= set(everything)


def test_adapter_files_as_peft_writes_them():
    d = write_model("files", LLAMA)
    a = write_adapter("files_adapter", d, ["v_proj", "q_proj"], r=5, alpha=10)
    with open(os.path.join(a, "adapter_config.json")) as f:
        text = f.read()
    acfg = json.loads(text)
    assert text == json.dumps(acfg, indent=2, sort_keys=True)
    assert acfg["peft_type"] == "LORA" and acfg["task_type"] == "CAUSAL_LM" and acfg["r"] == 5
    assert acfg["lora_alpha"] == 10 and acfg["target_modules"] == ["q_proj", "v_proj"]
    tensors, meta = st.load(os.path.join(a, "adapter_model.safetensors"))
    assert meta == {"format": "pt"}
    assert tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (5, 32)
    assert tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"].shape == (16, 5)
    a_ = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    assert a_.abs().max() <= 1 / math.sqrt(32)  # kaiming_uniform_(a=sqrt(5)) bound
    assert len(tensors) == 8


def test_cli_end_to_end():
    d = write_model("cli", PHI3)
    a = os.path.join(TMP.name, "cli_adapter")
    inp = os.path.join(TMP.name, "cli_in.json")
    x = ids(t=8)
    with open(inp, "w") as f:
        json.dump({"input_ids": x.tolist(), "labels": labels_for(x).tolist()}, f)
    script = os.path.join(HERE, "reference.py")

    def run(*args):
        subprocess.run([sys.executable, script, *args], check=True, capture_output=True, text=True)

    run("make-adapter", "--model", d, "--output", a, "--rank", "2", "--alpha", "4", "--targets",
        "qkv_proj,o_proj,gate_up_proj,down_proj", "--seed", "3")
    outs = {}
    for tag, extra in (("plain", []), ("merged", ["--merge"]), ("f64", ["--float64"])):
        path = os.path.join(TMP.name, f"cli_{tag}.safetensors")
        run("forward", "--model", d, "--adapter", a, "--input", inp, "--output", path, *extra)
        outs[tag], _ = st.load(path)
    names = {n for n in outs["plain"] if n.startswith("base_model.")}
    assert len(names) == 16 and "base_model.model.model.layers.1.self_attn.qkv_proj.lora_B.weight" in names
    assert outs["plain"]["logits"].shape == (2, 8, 41) and outs["plain"]["loss"].shape == ()
    for tag in ("merged", "f64"):
        close(outs[tag]["logits"], outs["plain"]["logits"], 1e-4, tag)
        close(outs[tag]["loss"], outs["plain"]["loss"], 1e-5, tag)
    res = subprocess.run([sys.executable, script, "train-bench", "--model", d, "--adapter", a, "--batch", "2",
                          "--seq", "8", "--steps", "2", "--threads", "1"], check=True, capture_output=True, text=True)
    line = json.loads(res.stdout)
    assert line["threads"] == 1 and line["tokens_per_s"] > 0 and line["torch"] == torch.__version__
    bad = subprocess.run([sys.executable, script, "forward", "--model", d, "--input", inp, "--output",
                          os.path.join(TMP.name, "x.st"), "--merge"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--merge needs --adapter" in bad.stderr


# ---------------------------------------------------------------------------- training


def doc_labels(x, doc_lens):
    """Next-token labels that stay inside each packed document (its last position is -100)."""
    lab = torch.full_like(x, ref.IGNORE_INDEX)
    for b, lens in enumerate(doc_lens):
        start = 0
        for n in lens:
            lab[b, start:start + n - 1] = x[b, start + 1:start + n]
            start += n
    return lab


def test_packed_attention_equals_documents_alone():
    doc_lens = [[4, 2, 3], [5, 4], [1, 5, 3]]  # every document <= 6: Phi-3 keeps its short factors
    for name, config, targets in (
            ("llama", LLAMA, ["q_proj", "v_proj", "o_proj"]),
            ("qwen2_swa", dict(QWEN2, use_sliding_window=True, sliding_window=3, max_window_layers=1),
             ["k_proj", "v_proj", "up_proj"]),
            ("phi3_window", dict(PHI3, sliding_window=3), ["qkv_proj", "gate_up_proj"])):
        d = write_model(f"pack_{name}", config)
        a = write_adapter(f"pack_{name}_adapter", d, targets, b_std=0.2)
        model, params = _forward_with_adapter(d, a, "float64")
        x = ids(b=3, t=9, seed=11)
        lab = doc_labels(x, doc_lens)
        packed = ref.model_forward(model, x, doc_lens)
        packed_sum = torch.nn.functional.cross_entropy(packed.reshape(-1, 41), lab.reshape(-1), reduction="sum")
        want_grads = torch.autograd.grad(packed_sum, list(params.values()))
        alone_sum = 0
        for b, lens in enumerate(doc_lens):
            start = 0
            for n in lens:
                alone = ref.model_forward(model, x[b:b + 1, start:start + n])
                close(packed[b, start:start + n], alone[0], 1e-10, f"{name}: row {b} document at {start}")
                alone_sum = alone_sum + torch.nn.functional.cross_entropy(
                    alone[0], lab[b, start:start + n], reduction="sum")
                start += n
        close(packed_sum, alone_sum, 1e-10, f"{name}: loss")
        for pname, g_packed, g_alone in zip(params, want_grads, torch.autograd.grad(alone_sum, list(params.values()))):
            close(g_packed, g_alone, 1e-10, f"{name}: {pname}")
        # The mask really separates documents: without doc_lens the logits change.
        assert (ref.model_forward(model, x) - packed).abs().max() > 1e-3, name
        # One document per row is the unpacked forward.
        close(ref.model_forward(model, x, [[9]] * 3), ref.model_forward(model, x), 0, f"{name}: one document")


def test_packed_longrope_uses_the_longest_document():
    # Phi-3 longrope switches to the long factors when max(position_ids) + 1 > original (6): in a
    # packed batch that is the longest document's length, whatever its row.
    model = ref.load_model(write_model("pack_longrope", PHI3), "float64")
    short, long_ = ids(b=1, t=3, seed=12)[0], ids(b=1, t=7, seed=13)[0]
    x = torch.stack([torch.cat([short, long_]), torch.cat([long_, short])])
    packed = ref.model_forward(model, x, [[3, 7], [7, 3]])
    close(packed[0, :3], packed[1, 7:], 1e-10, "3-token document first vs last in its row")
    alone_long = ref.model_forward(model, long_[None])[0]  # 7 positions: long factors too
    close(packed[0, 3:], alone_long, 1e-10, "7-token document")
    close(packed[1, :7], alone_long, 1e-10, "7-token document first in its row")
    alone_short = ref.model_forward(model, short[None])[0]  # 3 positions: short factors
    assert (packed[0, :3] - alone_short).abs().max() > 1e-6, "short document must see the long factors"
    close(ref.model_forward(model, x[:, :6], [[3, 3], [3, 3]])[0, :3], alone_short, 1e-10, "all short")


def test_step_loss_is_one_mean_over_micro_batches():
    d = write_model("accum", LLAMA)
    a = write_adapter("accum_adapter", d, ["q_proj", "v_proj", "gate_proj"], b_std=0.2)
    model, params = _forward_with_adapter(d, a, "float64")
    x = ids(b=2, t=9, seed=14)
    lab = labels_for(x)
    lab[1, :6] = ref.IGNORE_INDEX  # row 0 counts 7 labels, row 1 counts 2
    whole = [ref.MicroBatch(x, lab)]
    split = [ref.MicroBatch(x[:1], lab[:1]), ref.MicroBatch(x[1:], lab[1:])]
    trainable = list(params.values())
    loss_whole, n_whole = ref.step_gradients(model, trainable, whole)
    grads_whole = [p.grad.clone() for p in trainable]
    loss_split, n_split = ref.step_gradients(model, trainable, split)
    assert n_whole == n_split == 9, (n_whole, n_split)
    assert abs(loss_whole - loss_split) < 1e-12, (loss_whole, loss_split)
    for g, p in zip(grads_whole, trainable):
        close(p.grad, g, 1e-12, "accumulated gradient")
    # The same as HF's mean over the batch, and not a mean of per-micro-batch means.
    logits = ref.model_forward(model, x)
    assert abs(loss_whole - ref.causal_lm_loss(logits, lab)[0].item()) < 1e-12
    means = [ref.causal_lm_loss(logits[i:i + 1], lab[i:i + 1])[0].item() for i in range(2)]
    assert abs(loss_whole - sum(means) / 2) > 1e-3, (loss_whole, means)


def test_schedule_values():
    def f(name, s, warmup=3, total=13, min_lr=1e-4, lr=1e-3):
        return ref.lr_factor({"name": name, "warmup_steps": warmup, "total_steps": total, "min_lr": min_lr}, s, lr)

    # r = min_lr / lr = 0.1; p = (s - 3) / 10. Values worked out by hand.
    cases = [
        ("constant", 0, 0.0), ("constant", 1, 1 / 3), ("constant", 2, 2 / 3), ("constant", 3, 1.0),
        ("constant", 50, 1.0),
        ("linear", 0, 0.0), ("linear", 2, 2 / 3), ("linear", 3, 1.0), ("linear", 5, 0.82), ("linear", 8, 0.55),
        ("linear", 13, 0.1), ("linear", 20, 0.1),
        ("cosine", 0, 0.0), ("cosine", 1, 1 / 3), ("cosine", 3, 1.0),
        ("cosine", 5, 0.914057647468726),  # 0.1 + 0.45 (1 + cos 36 degrees)
        ("cosine", 8, 0.55), ("cosine", 13, 0.1),
        ("cosine", 20, 0.1),  # p = 1.7 clamped to 1
    ]
    for name, s, want in cases:
        got = f(name, s)
        assert abs(got - want) < 1e-12, f"{name} at step {s}: {got} != {want}"
    # No warmup, min_lr 0: HF's get_linear_schedule_with_warmup(0, 10) is (10 - s) / 10.
    assert f("linear", 0, 0, 10, 0.0) == 1.0 and abs(f("linear", 4, 0, 10, 0.0) - 0.6) < 1e-15
    assert abs(f("cosine", 5, 0, 10, 0.0) - 0.5) < 1e-15 and f("cosine", 10, 0, 10, 0.0) < 1e-15


def test_clipping_matches_clip_grad_norm_():
    g = torch.Generator().manual_seed(15)
    shapes = [(3, 8), (8, 3), (5,), (2, 2)]
    grads = [torch.randn(s, generator=g) for s in shapes]
    norm = math.sqrt(sum(float((x.double() ** 2).sum()) for x in grads))
    for max_norm in (0.25 * norm, 4.0 * norm, norm):
        mine = [torch.zeros(s, requires_grad=True) for s in shapes]
        theirs = [torch.zeros(s, requires_grad=True) for s in shapes]
        for p, q, x in zip(mine, theirs, grads):
            p.grad, q.grad = x.clone(), x.clone()
        got = ref.clip_grad_norm(mine, max_norm)
        want = float(torch.nn.utils.clip_grad_norm_(theirs, max_norm))
        assert abs(got - want) <= 1e-6 * want and abs(got - norm) <= 1e-5 * norm, (got, want, norm)
        for p, q in zip(mine, theirs):
            close(p.grad, q.grad, 1e-7, f"clipped to {max_norm:.3g}")
    clipped = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in mine))
    assert abs(clipped - norm) < 1e-5 * norm  # max_norm == norm: a coefficient of 1 - 1e-6 / norm
    # max_grad_norm 0: the norm is reported, nothing is clipped.
    mine = [torch.zeros(s, requires_grad=True) for s in shapes]
    for p, x in zip(mine, grads):
        p.grad = x.clone()
    assert abs(ref.clip_grad_norm(mine, 0.0) - norm) <= 1e-5 * norm
    for p, x in zip(mine, grads):
        assert torch.equal(p.grad, x)


def test_adamw_steps_by_hand():
    # AdamW's first update is p (1 - lr wd) - lr g / (|g| + eps) (bias-corrected moments m = g,
    # sqrt(v) = |g|); warmup's step 0 runs at lr 0 and leaves the weights as they were.
    d = write_model("adamw", QWEN2)
    a = write_adapter("adamw_adapter", d, ["q_proj", "o_proj"], b_std=0.2)
    x = ids(b=2, t=7, seed=16)
    batch = [ref.MicroBatch(x, labels_for(x))]
    model, params = _forward_with_adapter(d, a, "float64")
    before = {n: p.detach().clone() for n, p in params.items()}
    ref.step_gradients(model, list(params.values()), batch)
    grads = {n: p.grad.clone() for n, p in params.items()}
    lr, wd, eps = 0.01, 0.1, 1e-8
    schedule = {"name": "constant", "warmup_steps": 0, "total_steps": 1, "min_lr": 0.0}
    plan = ref.Plan([batch], lr, (0.9, 0.999), eps, wd, schedule, 0.0)
    metrics = ref.train(model, params, plan)
    assert metrics["lr"] == [lr] and metrics["tokens"] == [11]
    for n, p in params.items():
        want = before[n] * (1 - lr * wd) - lr * grads[n] / (grads[n].abs() + eps)
        close(p.detach(), want, 1e-12, f"AdamW step of {n}")
    warm = ref.Plan([batch], lr, (0.9, 0.999), eps, wd, dict(schedule, warmup_steps=2), 0.0)
    model, params = _forward_with_adapter(d, a, "float64")
    assert ref.train(model, params, warm)["lr"] == [0.0]
    for n, p in params.items():
        assert torch.equal(p.detach(), before[n]), n


def _train_plan(packed):
    """Eight steps of two micro-batches over the same few rows, for the `train` CLI test."""
    x = ids(b=3, t=10, seed=17)
    doc_lens = [[4, 6], [10], [3, 3, 4]]
    lab = doc_labels(x, doc_lens) if packed else labels_for(x)
    first = {"input_ids": x[:2].tolist(), "labels": lab[:2].tolist()}
    second = {"input_ids": x[2:].tolist(), "labels": lab[2:].tolist()}
    if packed:
        first["doc_lens"], second["doc_lens"] = doc_lens[:2], doc_lens[2:]
    return {"steps": [{"micro_batches": [first, second]}] * 8,
            "optimizer": {"lr": 0.02, "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.01},
            "schedule": {"name": "linear", "warmup_steps": 2, "total_steps": 8, "min_lr": 0.002},
            "max_grad_norm": 0.5}, int((lab != ref.IGNORE_INDEX).sum())


def test_train_cli_end_to_end():
    d = write_model("train_cli", PHI3)
    a = write_adapter("train_cli_adapter", d, ["qkv_proj", "o_proj", "down_proj"], b_std=0.1)
    script = os.path.join(HERE, "reference.py")
    initial, _ = st.load(os.path.join(a, "adapter_model.safetensors"))
    runs = {}
    for packed, dtype in ((True, "auto"), (True, "float64"), (False, "auto")):
        plan, counted = _train_plan(packed)
        plan_path = os.path.join(TMP.name, f"plan_{packed}.json")
        with open(plan_path, "w") as f:
            json.dump(plan, f)
        out = os.path.join(TMP.name, f"trained_{packed}_{dtype}")
        subprocess.run([sys.executable, script, "train", "--model", d, "--adapter", a, "--plan", plan_path,
                        "--output", out, "--threads", "1", "--dtype", dtype],
                       check=True, capture_output=True, text=True)
        with open(os.path.join(out, "metrics.json")) as f:
            metrics = json.load(f)
        trained, meta = st.load(os.path.join(out, "adapter_model.safetensors"))
        runs[packed, dtype] = metrics, trained
        assert meta == {"format": "pt"}
        with open(os.path.join(out, "adapter_config.json"), "rb") as f, \
                open(os.path.join(a, "adapter_config.json"), "rb") as g:
            assert f.read() == g.read(), "adapter_config.json must be copied as is"
        assert set(trained) == set(initial) and len(trained) == 12
        for n, t in trained.items():
            assert t.dtype == torch.float32 and t.shape == initial[n].shape, n
        assert any((trained[n] - initial[n]).abs().max() > 1e-4 for n in trained), "nothing trained"
        for key in ("loss", "grad_norm", "lr", "tokens"):
            assert len(metrics[key]) == 8, key
        assert metrics["tokens"] == [counted] * 8
        want_lr = [0.02 * ref.lr_factor(ref.parse_plan(plan, 41).schedule, s, 0.02) for s in range(8)]
        assert metrics["lr"] == want_lr, metrics["lr"]
        assert max(metrics["grad_norm"]) > plan["max_grad_norm"], "clipping never bites"
        assert metrics["loss"][0] == metrics["loss"][1], "step 0 runs at lr 0"
        assert metrics["loss"][-1] < metrics["loss"][0] - 0.1, metrics["loss"]
        assert metrics["threads"] == 1 and metrics["torch"] == torch.__version__ and metrics["seconds"] > 0
        assert abs(metrics["tokens_per_s"] * metrics["seconds"] - 8 * 30) < 1e-6
    # Packing changes what is trained; float32 follows the float64 run closely.
    assert runs[True, "auto"][0]["loss"][0] != runs[False, "auto"][0]["loss"][0]
    (m32, t32), (m64, t64) = runs[True, "auto"], runs[True, "float64"]
    assert m32["dtype"] == "float32" and m64["dtype"] == "float64"
    for s in range(8):
        assert abs(m32["loss"][s] - m64["loss"][s]) <= 1e-5 * m64["loss"][s], (s, m32["loss"][s], m64["loss"][s])
        assert abs(m32["grad_norm"][s] - m64["grad_norm"][s]) <= 1e-4 * m64["grad_norm"][s]
    for n in t32:
        close(t32[n], t64[n], 1e-4, f"float32 vs float64 {n}")


def test_train_rejects_bad_plans():
    x = ids(b=2, t=5, seed=18)
    good = {"steps": [{"micro_batches": [{"input_ids": x.tolist(), "labels": labels_for(x).tolist(),
                                          "doc_lens": [[2, 3], [5]]}]}],
            "optimizer": {"lr": 1e-3}}
    plan = ref.parse_plan(good, 41)
    assert plan.betas == (0.9, 0.999) and plan.weight_decay == 0.01 and plan.max_grad_norm == 0.0
    assert plan.schedule == {"name": "constant", "warmup_steps": 0, "total_steps": 1, "min_lr": 0.0}
    assert plan.steps[0][0].doc_lens == [[2, 3], [5]]
    for empty in (None, []):  # a nil or empty Go slice: not packed
        unpacked = dict(good["steps"][0]["micro_batches"][0], doc_lens=empty)
        assert ref.parse_plan(dict(good, steps=[{"micro_batches": [unpacked]}]), 41).steps[0][0].doc_lens is None

    def mb(**change):
        return dict(good, steps=[{"micro_batches": [dict(good["steps"][0]["micro_batches"][0], **change)]}])

    bad = {
        "ragged rows": mb(input_ids=[[1, 2, 3, 4, 5], [1, 2, 3, 4]]),
        "doc_lens not summing to T": mb(doc_lens=[[2, 2], [5]]),
        "doc_lens with a zero": mb(doc_lens=[[0, 5], [5]]),
        "doc_lens for one row of two": mb(doc_lens=[[5]]),
        "label out of range": mb(labels=[[41, -100, 1, 2, 3], [1, 2, 3, 4, 5]]),
        "negative label": mb(labels=[[-5, -100, 1, 2, 3], [1, 2, 3, 4, 5]]),
        "input id out of range": mb(input_ids=[[1, 2, 3, 4, 99], [1, 2, 3, 4, 5]]),
        "boolean id": mb(input_ids=[[True, 2, 3, 4, 5], [1, 2, 3, 4, 5]]),
        "labels of another shape": mb(labels=[[1, 2, 3, 4, 5]]),
        "every label ignored": mb(labels=[[-100] * 5] * 2),
        "no labels": {"steps": [{"micro_batches": [{"input_ids": x.tolist()}]}], "optimizer": {"lr": 1e-3}},
        "empty steps": dict(good, steps=[]),
        "empty micro_batches": dict(good, steps=[{"micro_batches": []}]),
        "no optimizer": {"steps": good["steps"]},
        "no lr": dict(good, optimizer={"betas": [0.9, 0.999]}),
        "negative lr": dict(good, optimizer={"lr": -1e-3}),
        "beta of 1": dict(good, optimizer={"lr": 1e-3, "betas": [0.9, 1.0]}),
        "unknown schedule": dict(good, schedule={"name": "polynomial"}),
        "misspelt schedule key": dict(good, schedule={"name": "linear", "warmup": 3}),
        "fractional warmup": dict(good, schedule={"name": "linear", "warmup_steps": 1.5}),
        "negative max_grad_norm": dict(good, max_grad_norm=-1),
        "not an object": [good],
    }
    for what, data in bad.items():
        try:
            ref.parse_plan(data, 41)
        except ref.ReferenceError:
            continue
        raise AssertionError(f"{what}: accepted")

    d = write_model("train_bad", LLAMA)
    a = write_adapter("train_bad_adapter", d, ["q_proj"])
    plan_path = os.path.join(TMP.name, "bad_plan.json")
    with open(plan_path, "w") as f:
        json.dump(bad["doc_lens not summing to T"], f)
    out = os.path.join(TMP.name, "bad_out")
    res = subprocess.run([sys.executable, os.path.join(HERE, "reference.py"), "train", "--model", d, "--adapter", a,
                          "--plan", plan_path, "--output", out], capture_output=True, text=True)
    assert res.returncode == 2, res
    assert res.stderr.startswith("reference: ") and res.stderr.count("\n") == 1 and "doc_lens" in res.stderr, res.stderr
    assert not os.path.exists(out), "a refused plan must write nothing"


def main():
    torch.manual_seed(0)
    tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
    passed = failed = 0
    for name, fn in tests:
        try:
            fn()
        except Exception:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name}")
    TMP.cleanup()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
