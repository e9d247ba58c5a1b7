"""Helpers shared by the fixture scripts in this folder."""
import hashlib
import json
import os

import numpy as np


def synthetic(n, seed, amplitude):
    """`(u − 0.5)·amplitude`, u = ((i·2654435761 + 97·seed) mod 2³²) / 2³², in f64, then f32.

    The Rust tests evaluate the same formula (crates/quant/tests/common/mod.rs)."""
    i = np.arange(n, dtype=np.uint64)
    u = ((i * np.uint64(2654435761) + np.uint64(seed * 97)) % np.uint64(2**32)).astype(np.float64) / 2.0**32
    return ((u - 0.5) * amplitude).astype(np.float32)


def sha(a):
    """SHA-256 of an array's (or bytes') raw contents."""
    raw = a if isinstance(a, (bytes, bytearray)) else np.ascontiguousarray(a).tobytes()
    return hashlib.sha256(raw).hexdigest()


def write_fixture(name, out):
    """Writes fixtures/reference/NAME as indented JSON."""
    path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../fixtures/reference", name))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", path)
