#!/usr/bin/env python3
"""Writes fixtures/reference/quant.json: transformers' own BitNet quantizers on deterministic inputs.

Inputs are generated from a formula both this script and the Rust tests evaluate exactly
(see `synthetic` below and crates/quant/tests/reference.rs), so the fixture stores only the
results: SHA-256 of the ternary / int8 codes and the scales' f32 bit patterns.

    python3 tools/reference/quant_fixture.py   (needs torch and transformers, see requirements.txt)
"""
import struct

import numpy as np
import torch
import transformers
from transformers.integrations.bitnet import ActQuant, BitLinear, WeightQuant

from common import sha, synthetic, write_fixture


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


def main():
    weights = []
    for rows, cols, seed, amp in [(3, 5, 1, 2.0), (7, 129, 2, 0.1), (64, 256, 3, 0.05), (1, 1, 4, 1e-7),
                                  (256, 512, 5, 0.02), (640, 2560, 6, 0.03)]:
        w = torch.from_numpy(synthetic(rows * cols, seed, amp).reshape(rows, cols))
        fake = WeightQuant.apply(w)  # (round(w·s).clamp(-1, 1)) / s, in f32
        unit = fake.abs().max()  # 1 / s: the dequantized value of a +1 weight
        t = torch.round(fake / unit).to(torch.int8).numpy()
        # The mean's f32 sum order depends on torch's thread count: the scale with 1, 2 and 3 threads.
        by_threads = {}
        default_threads = torch.get_num_threads()
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            by_threads[str(threads)] = f32_bits(WeightQuant.apply(w).abs().max())
        torch.set_num_threads(default_threads)
        weights.append({"rows": rows, "cols": cols, "seed": seed, "amplitude": amp, "ternary_sha256": sha(t),
                        "scale_bits": f32_bits(unit), "scale_bits_by_threads": by_threads,
                        "counts": [int((t == v).sum()) for v in (-1, 0, 1)]})
    acts = []
    for rows, cols, seed, amp in [(1, 7, 11, 3.0), (4, 256, 12, 10.0), (2, 2560, 13, 0.5), (1, 16, 14, 1e-6)]:
        x = torch.from_numpy(synthetic(rows * cols, seed, amp).reshape(rows, cols))
        codes, scale = BitLinear.activation_quant(None, x)
        fake = ActQuant.apply(x) + 0.0  # + 0.0 turns torch.round's -0.0 into 0.0
        acts.append({"rows": rows, "cols": cols, "seed": seed, "amplitude": amp, "codes_sha256": sha(codes.numpy()),
                     "scale_bits": [f32_bits(s) for s in scale.flatten().tolist()],
                     "fake_quant_sha256": sha(fake.numpy())})
    out = {"made_by": "tools/reference/quant_fixture.py", "torch": torch.__version__,
           # torch's f32 sum order depends on its thread count (the weight means above).
           "torch_threads": torch.get_num_threads(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "transformers": transformers.__version__, "weights": weights, "activations": acts}
    write_fixture("quant.json", out)


if __name__ == "__main__":
    main()
