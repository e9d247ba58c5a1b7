#!/usr/bin/env python3
"""Writes fixtures/reference/tq.json: llama.cpp's TQ1_0 / TQ2_0 quantizers (gguf-py's numpy port of
ggml's quantize_row_tq*_0_ref) on deterministic float rows, as SHA-256 of the packed bytes.

    python3 tools/reference/tq_fixture.py   (needs: pip install gguf==0.19.0)
"""
import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize

from common import sha, synthetic, write_fixture


def main():
    out = {"made_by": "tools/reference/tq_fixture.py", "gguf": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0", "cases": []}
    for rows, cols, seed, amp in [(1, 256, 1, 2.0), (3, 512, 2, 0.3), (8, 1024, 3, 5.0)]:
        x = synthetic(rows * cols, seed, amp).reshape(rows, cols)
        # Ternarize-ish inputs too: many exact zeros and ±s, as converted BitNet weights look.
        t = np.round(x / np.abs(x).max() * 1.4).clip(-1, 1).astype(np.float32) * np.float32(0.75)
        for name, data in [("float", x), ("ternary", t)]:
            for kind in ("TQ1_0", "TQ2_0"):
                b = quantize(data, getattr(T, kind)).tobytes()
                out["cases"].append({"rows": rows, "cols": cols, "seed": seed, "amplitude": amp, "input": name,
                                     "type": kind, "bytes": len(b), "sha256": sha(b)})
    write_fixture("tq.json", out)


if __name__ == "__main__":
    main()
