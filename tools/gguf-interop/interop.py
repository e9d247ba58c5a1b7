#!/usr/bin/env python3
"""Cross-checks our GGUF reader/writer against llama.cpp's own `gguf` Python package.

    interop.py write OUT.gguf   write a file with every metadata type and several tensor types
    interop.py dump FILE.gguf   print a canonical JSON description of FILE as gguf-py reads it

The JSON form (metadata with gguf-py type names, tensors with type id, ggml shape, relative
offset, byte count and SHA-256 of the bytes) is what crates/format/tests/interop.rs compares
with its own reading of the same file.
"""
import hashlib
import json
import sys

import numpy as np
import gguf
from gguf import GGUFReader, GGUFValueType, GGUFWriter, GGMLQuantizationType


def write(path):
    w = GGUFWriter(path, arch="interop")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 0.1)
    w.add_bool("t.bool_t", True)
    w.add_bool("t.bool_f", False)
    w.add_string("t.str", "héllo wörld ✓")
    w.add_string("t.empty", "")
    w.add_uint64("t.u64", 2**63 + 12345)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 3.141592653589793)
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_str", ["a", "bc", "", "\u00e9"])
    w.add_array("t.arr_f32", [0.5, -1.25])
    w.add_array("t.arr_empty", [])
    w.add_array("t.arr_nested", [[1, 2], [3]])
    rng = np.random.default_rng(7)
    w.add_tensor("f32", rng.standard_normal((3, 5)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((7,)).astype(np.float16))
    w.add_tensor("i8", rng.integers(-128, 127, size=(2, 2, 3), dtype=np.int8))
    raw = rng.integers(0, 255, size=(2 * 34,), dtype=np.uint8)  # 2 rows x 32 of q8_0 bytes
    w.add_tensor("q8_0", raw, raw_shape=(2, 34), raw_dtype=GGMLQuantizationType.Q8_0)
    raw = rng.integers(0, 255, size=(66,), dtype=np.uint8)
    w.add_tensor("tq2_0", raw, raw_shape=(1, 66), raw_dtype=GGMLQuantizationType.TQ2_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def scalar(vtype, part):
    v = part.tolist()
    if isinstance(v, list):
        (v,) = v
    if vtype == GGUFValueType.BOOL:
        return bool(v)
    if vtype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        return float(v)
    return int(v)


def field_value(field):
    t = field.types[0]
    if t == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    if t == GGUFValueType.ARRAY:
        et = field.types[1] if len(field.types) > 1 else None
        if et == GGUFValueType.ARRAY:
            # gguf-py does not decode nested arrays; walk the parts ourselves.
            return nested(field)
        out = []
        for i in field.data:
            if et == GGUFValueType.STRING:
                out.append(bytes(field.parts[i]).decode("utf-8"))
            else:
                out.append(scalar(et, field.parts[i]))
        return out
    return scalar(t, field.parts[field.data[0]])


def nested(field):
    # Parts after key (len, bytes) and type: [arr_type, arr_len, (inner_type, inner_len, items...)...]
    parts = field.parts[3:]
    count = int(parts[1][0])
    pos = 2
    out = []
    for _ in range(count):
        inner_type = GGUFValueType(int(parts[pos][0]))
        n = int(parts[pos + 1][0])
        pos += 2
        items = []
        for _ in range(n):
            items.append(scalar(inner_type, parts[pos]))
            pos += 1
        out.append(items)
    return out


def type_names(field):
    names = [GGUFValueType(t).name for t in field.types]
    if names == ["ARRAY"]:  # gguf-py records no element type for an empty array
        names.append(GGUFValueType(int(field.parts[3][0])).name)
    return names


def dump(path):
    r = GGUFReader(path)
    meta = []
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        meta.append([f.name, type_names(f), field_value(f)])
    data_start = r.data_offset  # start of the data section, after alignment padding
    tensors = []
    for t in r.tensors:
        raw = bytes(r.data[t.data_offset : t.data_offset + t.n_bytes])
        tensors.append({
            "name": t.name,
            "type": int(t.tensor_type),
            "shape": [int(x) for x in t.shape],
            "offset": int(t.data_offset - data_start),
            "bytes": int(t.n_bytes),
            "sha256": hashlib.sha256(raw).hexdigest(),
        })
    json.dump({"metadata": meta, "tensors": tensors}, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "dump"):
        sys.exit(__doc__)
    {"write": write, "dump": dump}[sys.argv[1]](sys.argv[2])
