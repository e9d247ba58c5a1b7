#!/usr/bin/env python3
"""Writes fixtures/reference/dense.json: llama.cpp's dequantization (gguf-py 0.19.0's numpy port of
ggml) of Q8_0 and Q6_K blocks, for the embedding/output-head types the model crate reads.

Q8_0 blocks come from gguf-py's own quantizer; Q6_K blocks are random bytes with a fixed f16 scale
(gguf-py has no Q6_K quantizer, and every byte pattern is a valid Q6_K block).

    python3 tools/reference/dense_fixture.py
"""
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

from common import synthetic, write_fixture


def main():
    cases = []
    x = synthetic(2 * 64, 21, 3.0).reshape(2, 64)
    q8 = quantize(x, T.Q8_0)
    cases.append({"type": "Q8_0", "cols": 64, "bytes": q8.tobytes().hex(),
                  "values": [float(v) for v in dequantize(q8, T.Q8_0).reshape(-1)]})
    rng = np.random.default_rng(6)
    q6 = rng.integers(0, 256, size=(2, 210), dtype=np.uint8)
    q6[:, 208:210] = np.frombuffer(np.float16(0.0123).tobytes(), dtype=np.uint8)
    cases.append({"type": "Q6_K", "cols": 256, "bytes": q6.tobytes().hex(),
                  "values": [float(v) for v in dequantize(q6, T.Q6_K).reshape(-1)]})
    write_fixture("dense.json", {"made_by": "tools/reference/dense_fixture.py", "cases": cases})


if __name__ == "__main__":
    main()
