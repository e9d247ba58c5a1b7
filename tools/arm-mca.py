#!/usr/bin/env python3
"""Cycles per 128 weights of the aarch64 I2_S inner loops, ours against bitnet.cpp's, from llvm-mca.

No ARM machine is at hand and timing under qemu means nothing, so this compares instruction
schedules: the compiled innermost loop of each kernel is handed to llvm-mca for several CPU
models, and its cycles per iteration are scaled to 128 multiply-accumulates of one weight row
with one token (GEMV: 128 weights of one row; GEMM: 128 weight·token products).

    python3 tools/arm-mca.py --bitnet-src /path/to/BitNet [--mca llvm-mca-22] [--clang clang-19]
    python3 tools/arm-mca.py --lut [--mca llvm-mca-22]

With --lut it compares instead our lookup-table loops (crates/tl-lut's NEON `tile128`: TL2 at
1.67 bits per weight, TL1 at 2) with our I2_S GEMV loops and the TQ1_0 `sdot` GEMV loop, per 128
weights (one token).

Needs Debian's rustc with the arm64 std (../shared/ARM.md), llvm-mca with the Neoverse models
(LLVM >= 16; bookworm-security has llvm-22) and any clang that targets aarch64. bitnet.cpp's
source is read from a checkout given on the command line (`fetch microsoft/BitNet`); only its
kernel functions are compiled, in a temporary directory, and nothing of it is written here.
Prints a Markdown table (docs/kernels.md keeps the last one).
"""

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPUS = ["cortex-a72", "cortex-a76", "neoverse-n1", "neoverse-v1", "neoverse-n2", "apple-m1"]
# Instructions that do the multiplies, and how many multiply-accumulates each does.
MACS = {"sdot": 16, "smmla": 32, "smull": 8, "smull2": 8, "smlal": 8, "smlal2": 8}


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def functions(asm):
    """Map symbol -> list of body lines (directives and comments dropped)."""
    out, name = {}, None
    for line in asm.splitlines():
        line = line.split("//")[0].rstrip()
        m = re.match(r"^([A-Za-z_.$][\w.$]*):\s*$", line)
        if m and not m.group(1).startswith(".L"):
            name = m.group(1)
            out[name] = []
            continue
        if name is None:
            continue
        s = line.split("//")[0].rstrip()
        if not s.strip() or re.match(r"^\s*\.(loc|cfi_|file|p2align|size|type|section|globl|tmp)", s):
            continue
        if re.match(r"^\.Ltmp\d+:", s.strip()):
            continue
        out[name].append(s)
    return out


def loops(body):
    """Innermost loops: (label, lines from the label to the backward branch to it)."""
    found = []
    labels = {}
    for i, line in enumerate(body):
        m = re.match(r"^(\.?L\w+):", line.strip())
        if m:
            labels[m.group(1)] = i
        m = re.match(r"^\s*(b\.\w+|b|cbnz|cbz|tbnz|tbz)\s+(?:\w+,\s*)*(\.?L\w+)\s*$", line)
        if m and m.group(2) in labels and labels[m.group(2)] < i:
            start = labels[m.group(2)]
            lines = [l for l in body[start + 1:i + 1] if not re.match(r"^\s*\.?L\w+:", l.strip())]
            found.append((m.group(2), start, i, lines))
    # Innermost only: no other loop inside.
    inner = [f for f in found if not any(g is not f and f[1] <= g[1] and g[2] <= f[2] for g in found)]
    return [(label, lines) for label, _, _, lines in inner]


def macs(lines):
    n = 0
    for l in lines:
        op = l.split()[0] if l.split() else ""
        n += MACS.get(op, 0)
    return n


def count(lines, opcode):
    return sum(1 for x in lines if x.split() and x.split()[0] == opcode)


def best_loop(body, opcode, exact=None):
    """The innermost loop with the most multiplies, or the one with exactly `exact` `opcode`s."""
    cands = [(l, ls) for l, ls in loops(body) if count(ls, opcode) and (exact is None or count(ls, opcode) == exact)]
    if not cands:
        raise SystemExit(f"no loop with {opcode}")
    # The hot loop: most multiply instructions.
    return max(cands, key=lambda c: (macs(c[1]), -len(c[1])))[1]


def mca(mca_bin, lines, cpu, attrs):
    text = "\n".join(lines) + "\n"
    out = run([mca_bin, "-mtriple=aarch64", f"-mcpu={cpu}", f"-mattr={attrs}", "-iterations=400"], input=text)
    cycles = int(re.search(r"Total Cycles:\s+(\d+)", out).group(1))
    iters = int(re.search(r"Iterations:\s+(\d+)", out).group(1))
    return cycles / iters


def ours(tmp, crate="bitnet-kernels-arm"):
    env = dict(os.environ, RUSTC="/usr/bin/rustc", CARGO_TARGET_DIR=os.path.join(tmp, "target"),
               RUSTFLAGS="--emit asm", CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="aarch64-linux-gnu-gcc")
    run(["cargo", "build", "--release", "--quiet", "-p", crate, "--target", "aarch64-unknown-linux-gnu"],
        cwd=ROOT, env=env)
    stem = crate.replace("-", "_")
    asm = open(glob.glob(os.path.join(tmp, f"target/aarch64-unknown-linux-gnu/release/deps/{stem}-*.s"))[0]).read()
    return functions(asm)


def lut_table(args, tmp):
    """Cycles per 128 weights (one token): our TL2 / TL1 lookup loops against our I2_S GEMVs."""
    f = ours(tmp)
    lut = ours(tmp, "bitnet-tl-lut")
    # The instances of tile128::<SIGN, V> (their symbols do not name the parameters): TL2
    # triples <true, 2> apply sign bits (cmtst or cmeq + bif/neg, as the compiler chose), TL1
    # <false, 4> has the most tbl of the unsigned ones (a group of four steps of four vectors:
    # 64; TL2's pair runs, <false, 2>, 32).
    # The main loop of each: the one with the most lookups (TL2's signed walk goes eight
    # vectors a step; its instance also holds the unsigned loop, shorter).
    inst = [max((ls for _, ls in loops(lut[n]) if count(ls, "tbl")), key=lambda ls: count(ls, "tbl")) for n in lut if "tile128" in n]
    signed = lambda ls: count(ls, "cmtst") + count(ls, "bif") + count(ls, "neg") > 0
    tl2 = [ls for ls in inst if signed(ls)]
    tl1 = sorted((ls for ls in inst if not signed(ls)), key=lambda ls: -count(ls, "tbl"))[:1]
    if not tl2 or not tl1:
        raise SystemExit("tile128 instances not found")

    def lut_loop(lines, group):
        # Four tbl per 16 index bytes (two nibbles, two byte planes each): 32 indices.
        return lines, count(lines, "tbl") // 4 * 32 * group

    rows = []
    for who, (lines, weights) in [("TL2 lookup (1.67 bits)", lut_loop(tl2[0], 3)), ("TL1 lookup (2 bits)", lut_loop(tl1[0], 2))]:
        rows.append(("neon", who, lines, weights, "+neon"))
    neon = best_loop(pick(f, "neon", "gemv"), "smlal2", 8)
    rows.append(("neon", "I2_S smlal (2 bits)", neon, macs(neon), "+neon"))
    dot = best_loop(pick(f, "dotprod4gemv"), "sdot", 8)
    rows.append(("dotprod", "I2_S sdot (2 bits)", dot, macs(dot), "+neon,+dotprod"))
    # TQ1_0's own one-token loop (inlined into dotprod::gemv; the loop whose digits take `mul`),
    # which `Kernels::runs_tq1_0_as_tl2` weighs the TL2 walk against. It runs two `sdot` per 16
    # weights (3·Σ a·x − Σ a·x', the digit never extracted), so its weights are half its products.
    cands = [ls for _, ls in loops(pick(f, "dotprod4gemv")) if count(ls, "sdot") and count(ls, "mul")]
    if not cands:
        raise SystemExit("the TQ1_0 sdot loop was not found")
    tq1 = max(cands, key=lambda ls: count(ls, "sdot"))
    rows.append(("dotprod", "TQ1_0 sdot (1.69 bits)", tq1, macs(tq1) // 2, "+neon,+dotprod"))
    print("| level | loop | weights/iter | " + " | ".join(CPUS) + " |")
    print("|---|---|---|" + "---|" * len(CPUS))
    for level, who, lines, weights, attrs in rows:
        cells = per_cpu(args, lines, level, attrs, weights, who)
        print(f"| {level} | {who} | {weights} | " + " | ".join(cells) + " |")


def per_cpu(args, lines, level, attrs, per, label):
    """Cycles per 128 of `per` (the loop's multiply-accumulates or weights) on each CPU model."""
    cells = []
    for cpu in CPUS:
        # cortex-a72 has no dotprod: only the plain NEON loops run there.
        if cpu == "cortex-a72" and level != "neon":
            cells.append("–")
            continue
        try:
            cells.append(f"{mca(args.mca, lines, cpu, attrs) * 128 / per:.2f}")
        except (subprocess.CalledProcessError, AttributeError) as e:
            cells.append("n/a")
            print(f"{label} on {cpu}: {e}", file=sys.stderr)
    return cells


def pick(funcs, *parts):
    names = [n for n in funcs if all(p in n for p in parts)]
    if not names:
        raise SystemExit(f"no function matching {parts}")
    return funcs[min(names, key=len)]


def theirs(src_dir, clang, tmp, march):
    """bitnet.cpp's ggml_vec_dot_i2_i8_s_* functions (ARM paths), compiled alone with stub headers."""
    src = open(os.path.join(src_dir, "src/ggml-bitnet-mad.cpp")).read()
    keep = []
    for name in ["ggml_vec_dot_i2_i8_s_1x1", "ggml_vec_dot_i2_i8_s_Nx1"]:
        i = src.index(f"void {name}(")
        depth, j = 0, src.index("{", i)
        while True:
            depth += {"{": 1, "}": -1}.get(src[j], 0)
            j += 1
            if depth == 0:
                break
        keep.append(src[i:j])
    d = os.path.join(tmp, "bitnet")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(src_dir, "include/gemm-config.h")) as f:
        config = f.read()
    path = os.path.join(d, f"mad-{march}.cpp")
    with open(path, "w") as f:
        f.write("#include <arm_neon.h>\n#include <stdint.h>\n#include <stddef.h>\n#define QK_I2_S 64\n")
        f.write(config + "\n" + "\n".join(keep) + "\n")
    out = path[:-4] + ".s"
    run([clang, "--target=aarch64-linux-gnu", f"-march={march}", "-O3", "-S", "-w", path, "-o", out])
    return functions(open(out).read())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bitnet-src", help="a checkout of microsoft/BitNet")
    ap.add_argument("--lut", action="store_true", help="our lookup-table loops against our I2_S GEMVs")
    ap.add_argument("--mca", default="llvm-mca-22")
    ap.add_argument("--clang", default="clang-19")
    args = ap.parse_args()
    if args.lut:
        with tempfile.TemporaryDirectory() as tmp:
            lut_table(args, tmp)
        return
    if not args.bitnet_src:
        ap.error("--bitnet-src is required (or --lut)")
    with tempfile.TemporaryDirectory() as tmp:
        f = ours(tmp)
        dot = theirs(args.bitnet_src, args.clang, tmp, "armv8.2-a+dotprod")
        plain = theirs(args.bitnet_src, args.clang, tmp, "armv8-a")
        # (kernel, loop lines, weights·tokens per iteration source, feature attrs, level)
        rows = [
            # I2_S x86 order: one 128-block (8 multiplies of 16) per iteration.
            ("GEMV", "neon", "ours", best_loop(pick(f, "neon", "gemv"), "smlal2", 8), "+neon"),
            ("GEMV", "neon", "bitnet.cpp", best_loop(pick(plain, "ggml_vec_dot_i2_i8_s_1x1"), "smlal2"), "+neon"),
            ("GEMV", "dotprod", "ours", best_loop(pick(f, "dotprod4gemv"), "sdot", 8), "+neon,+dotprod"),
            ("GEMV", "dotprod", "bitnet.cpp", best_loop(pick(dot, "ggml_vec_dot_i2_i8_s_1x1"), "sdot"), "+neon,+dotprod"),
            ("GEMM", "neon", "ours", best_loop(pick(f, "neon4tile"), "smlal2"), "+neon"),
            ("GEMM", "neon", "bitnet.cpp", best_loop(pick(plain, "ggml_vec_dot_i2_i8_s_Nx1"), "smlal2"), "+neon"),
            ("GEMM", "dotprod", "ours", best_loop(pick(f, "dotprod4tile"), "sdot"), "+neon,+dotprod"),
            ("GEMM", "dotprod", "bitnet.cpp", best_loop(pick(dot, "ggml_vec_dot_i2_i8_s_Nx1"), "sdot"), "+neon,+dotprod"),
            ("GEMM", "i8mm", "ours", best_loop(pick(f, "i8mm4tile"), "smmla"), "+neon,+dotprod,+i8mm"),
        ]
        print("| loop | level | kernel | MACs/iter | " + " | ".join(CPUS) + " |")
        print("|---|---|---|---|" + "---|" * len(CPUS))
        for kind, level, who, lines, attrs in rows:
            m = macs(lines)
            cells = per_cpu(args, lines, level, attrs, m, f"{kind} {level} {who}")
            print(f"| {kind} | {level} | {who} | {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
