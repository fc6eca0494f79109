#!/usr/bin/python3
"""Read and write safetensors files with torch and the standard library only.

The format (https://github.com/huggingface/safetensors, README "Format"):

    [8 bytes: N, unsigned little-endian]
    [N bytes: UTF-8 JSON header]
    [data: the raw little-endian bytes of every tensor, row-major]

The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end)}, offsets
relative to the start of the data, plus an optional "__metadata__" string->string map.

The reader is strict, like the reference one: a header over 100,000,000 bytes, invalid or
duplicated JSON keys, unknown dtypes, a byte length that does not match shape x dtype, and any
gap or overlap between tensors (sorted by offset they must tile the data exactly and the file must
end at the last `end`) are errors.

The writer lays the file out as the Rust `safetensors` crate does (`prepare` in
safetensors/src/tensor.rs): tensors sorted by descending dtype, then by name; header JSON compact,
"__metadata__" first, then the tensors in data order; the header padded with spaces to a multiple
of 8 bytes. HF writes {"format": "pt"} as metadata, so that is the default here too.
"""

import json
import os
import struct
import sys

import torch

MAX_HEADER_BYTES = 100_000_000

# safetensors dtype name -> (torch dtype, bytes per element). Only the dtypes torch 1.13 can hold.
_DTYPES = {
    "BOOL": (torch.bool, 1),
    "U8": (torch.uint8, 1),
    "I8": (torch.int8, 1),
    "I16": (torch.int16, 2),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I32": (torch.int32, 4),
    "F32": (torch.float32, 4),
    "F64": (torch.float64, 8),
    "I64": (torch.int64, 8),
}
# Dtypes of the format that torch 1.13 cannot represent: recognised, but not loadable here.
_KNOWN_UNSUPPORTED = {
    "U16", "U32", "U64", "C64", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ",
    "F4", "F6_E2M3", "F6_E3M2",
}
_TORCH_TO_NAME = {torch_dtype: name for name, (torch_dtype, _) in _DTYPES.items()}

# Declaration order of the Rust crate's `Dtype` enum (it derives Ord), restricted to the dtypes
# written here. The writer sorts by this order, descending, then by name.
_RUST_DTYPE_ORDER = ["BOOL", "U8", "I8", "I16", "F16", "BF16", "I32", "F32", "F64", "I64"]

if sys.byteorder != "little":
    raise RuntimeError("safetensors_io assumes a little-endian machine")


class SafetensorsError(ValueError):
    pass


def _reject_duplicates(pairs):
    """json object_pairs_hook: a key may appear once per object."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise SafetensorsError(f"duplicate key {key!r} in header")
        out[key] = value
    return out


def read_header(path):
    """Parse and validate the header of `path`.

    Returns (entries, metadata, data_start): entries maps name -> (dtype name, shape, begin, end)
    with offsets relative to data_start.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise SafetensorsError(f"{path}: file of {size} bytes has no 8-byte header length")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_BYTES:
            raise SafetensorsError(f"{path}: header length {n} exceeds {MAX_HEADER_BYTES}")
        if 8 + n > size:
            raise SafetensorsError(f"{path}: header length {n} runs past the end of the file ({size} bytes)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: invalid header JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")

    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise SafetensorsError(f"{path}: __metadata__ must map strings to strings")

    data_start = 8 + n
    data_len = size - data_start
    entries = {}
    for name, info in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{where}: want exactly dtype, shape and data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _DTYPES and dtype not in _KNOWN_UNSUPPORTED:
            raise SafetensorsError(f"{where}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise SafetensorsError(f"{where}: shape {shape!r} is not a list of non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
            raise SafetensorsError(f"{where}: bad data_offsets {offsets!r}")
        begin, end = offsets
        if dtype in _DTYPES:
            numel = 1
            for d in shape:
                numel *= d
            want = numel * _DTYPES[dtype][1]
            if end - begin != want:
                raise SafetensorsError(f"{where}: {end - begin} bytes for {dtype} {shape} (want {want})")
        entries[name] = (dtype, shape, begin, end)

    # Sorted by offset, the tensors must tile [0, data_len) exactly.
    cursor = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != cursor:
            kind = "gap" if begin > cursor else "overlap"
            raise SafetensorsError(f"{path}: {kind} before tensor {name!r} (offset {begin}, expected {cursor})")
        cursor = end
    if cursor != data_len:
        raise SafetensorsError(f"{path}: tensors end at {cursor} but the data has {data_len} bytes")
    return entries, metadata or {}, data_start


def load(path):
    """Return ({name: tensor}, metadata) for the safetensors file at `path`."""
    entries, metadata, data_start = read_header(path)
    with open(path, "rb") as f:
        f.seek(data_start)
        data = f.read()
    tensors = {}
    for name, (dtype, shape, begin, end) in entries.items():
        if dtype not in _DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r}: dtype {dtype} is not supported by this reader")
        torch_dtype = _DTYPES[dtype][0]
        if begin == end:
            tensors[name] = torch.empty(shape, dtype=torch_dtype)
            continue
        chunk = bytearray(data[begin:end])  # a private, writable copy
        tensors[name] = torch.frombuffer(chunk, dtype=torch_dtype).reshape(shape)
    return tensors, metadata


def load_dir(directory):
    """Load `model.safetensors`, or the shards named by `model.safetensors.index.json`."""
    single = os.path.join(directory, "model.safetensors")
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(single):
        return load(single)[0]
    if not os.path.exists(index):
        raise SafetensorsError(f"{directory}: neither model.safetensors nor model.safetensors.index.json")
    with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    tensors = {}
    for shard in sorted(set(weight_map.values())):
        part, _ = load(os.path.join(directory, shard))
        for name, t in part.items():
            if weight_map.get(name) != shard:
                raise SafetensorsError(f"{directory}/{shard}: tensor {name!r} is not mapped to this shard in the index")
            tensors[name] = t
    missing = set(weight_map) - set(tensors)
    if missing:
        raise SafetensorsError(f"{directory}: tensors in the index but in no shard: {sorted(missing)[:5]}")
    return tensors


def tensor_bytes(t):
    """The raw little-endian bytes of a tensor, row-major."""
    t = t.detach().contiguous().cpu().reshape(-1)  # 1-D: view() cannot reinterpret a scalar
    if t.numel() == 0:
        return b""
    if t.dtype == torch.bool:
        return t.to(torch.uint8).numpy().tobytes()
    return t.view(torch.uint8).numpy().tobytes()  # reinterpret, works for bf16 too


def save(tensors, path, metadata=None):
    """Write {name: tensor} to `path` (atomically: a temp file, fsync, rename)."""
    if metadata is None:
        metadata = {"format": "pt"}
    items = []
    for name, t in tensors.items():
        if name == "__metadata__":
            raise SafetensorsError("'__metadata__' is not a tensor name")
        if t.dtype not in _TORCH_TO_NAME:
            raise SafetensorsError(f"tensor {name!r}: dtype {t.dtype} cannot be written")
        items.append((name, _TORCH_TO_NAME[t.dtype], t))
    items.sort(key=lambda it: it[0])
    items.sort(key=lambda it: _RUST_DTYPE_ORDER.index(it[1]), reverse=True)  # stable: name order kept

    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, dtype, t in items:
        blob = tensor_bytes(t)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * ((8 - len(raw) % 8) % 8)

    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for blob in blobs:
                f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
