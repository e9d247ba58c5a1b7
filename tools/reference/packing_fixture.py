#!/usr/bin/env python3
"""Writes fixtures/reference/packing.json: bitnet.cpp's own packers on deterministic ternary matrices.

bitnet.cpp's converter is not vendored here. Point this script at a checkout of microsoft/BitNet
and it runs the packing functions of `utils/convert-hf-to-gguf-bitnet.py` (quantize_to_i2_s,
preprocess_weights_tl1, preprocess_weights_tl2), extracted with `ast` so that the converter's
other imports are not needed, and records SHA-256 of the bytes they produce:

    python3 tools/reference/packing_fixture.py /path/to/BitNet/utils/convert-hf-to-gguf-bitnet.py

The ternary matrices come from a formula crates/quant/tests/packing.rs evaluates too.
"""
import ast
import os
import sys
import tempfile
from typing import Tuple

import numpy as np

from common import sha, write_fixture

WANTED = {"quantize_to_i2_s", "process_tl1", "preprocess_weights_tl1", "preprocess_two_weights_tl2",
          "preprocess_three_weights_tl2", "preprocess_weights_tl2"}


def load(converter):
    tree = ast.parse(open(converter).read())
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in WANTED]
    missing = WANTED - {n.name for n in body}
    if missing:
        sys.exit(f"{converter} lacks {sorted(missing)}")
    ns = {"np": np, "Tuple": Tuple}
    exec(compile(ast.Module(body=body, type_ignores=[]), converter, "exec"), ns)
    return ns


def ternary(rows, cols, seed):
    i = np.arange(rows * cols, dtype=np.uint64)
    h = (i * np.uint64(2654435761) + np.uint64(seed * 97)) % np.uint64(2**32)
    return ((h >> np.uint64(16)) % np.uint64(3)).astype(np.int64).reshape(rows, cols) - 1


def main():
    ns = load(sys.argv[1])
    out = {"made_by": "tools/reference/packing_fixture.py", "i2_s": [], "tl1": [], "tl2": []}
    for rows, cols, seed, scale in [(1, 128, 1, 0.5), (3, 128, 2, 1.25), (8, 256, 3, 0.0123)]:
        t = ternary(rows, cols, seed)
        b = np.asarray(ns["quantize_to_i2_s"](t.astype(np.float32), override_scale=scale), dtype=np.uint8)
        out["i2_s"].append({"rows": rows, "cols": cols, "seed": seed, "scale": scale, "bytes": len(b), "sha256": sha(b)})
    cases = {
        "tl1": [(64, 128, 4, 32, 64, 32), (32, 64, 5, 32, 32, 16), (256, 256, 6, 128, 128, 32)],
        "tl2": [(64, 288, 7, 32, 96, 32), (64, 320, 8, 32, 96, 32), (128, 2560, 9, 64, 192, 32)],
    }
    here = os.getcwd()
    for kind, shapes in cases.items():
        for rows, cols, seed, bm, bk, bmm in shapes:
            with tempfile.TemporaryDirectory() as d:
                os.makedirs(os.path.join(d, "include"))
                with open(os.path.join(d, "include", "kernel_config.ini"), "w") as f:
                    f.write(f"[Kernels_0]\nm = {rows}\nk = {cols}\nbm = {bm}\nbk = {bk}\nbmm = {bmm}\n")
                os.chdir(d)
                try:
                    t = ternary(rows, cols, seed).astype(np.float32)
                    b = ns[f"preprocess_weights_{kind}"](t)
                finally:
                    os.chdir(here)
            b = np.asarray(b, dtype=np.uint8).reshape(-1)
            out[kind].append({"rows": rows, "cols": cols, "seed": seed, "tiling": [bm, bk, bmm],
                              "bytes": int(b.size), "sha256": sha(b)})
    write_fixture("packing.json", out)


if __name__ == "__main__":
    main()
