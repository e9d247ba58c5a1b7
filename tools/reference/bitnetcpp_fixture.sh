#!/usr/bin/env bash
# Writes GGUF files made by bitnet.cpp itself (not by us), and bitnet.cpp's own logits on them, for
# the loader tests:
#   fixtures/models/tiny-bitnet-1bitllm-bitnetcpp-f16.gguf        its converter, --outtype f16
#   fixtures/models/tiny-bitnet-1bitllm-128-bitnetcpp-i2_s.gguf   its converter (f32) + llama-quantize I2_S
#   fixtures/models/tiny-bitnet-1bitllm-128-bitnetcpp-i2_s.json   its logits and greedy tokens on that file
#
#   tools/reference/bitnetcpp_fixture.sh BITNET_CHECKOUT
#
# BITNET_CHECKOUT: microsoft/BitNet at c82b5e6 (bitnet.cpp 1.0, 2024-10-18; its converter writes
# 1bitLLM models as architecture `bitnet`) with its llama.cpp submodule (Eddie-Wang1120/llama.cpp
# 406a5036) in 3rdparty/llama.cpp, built as its README says (clang; here:
# `CC=clang CXX=clang++ cmake -B build && cmake --build build --target llama-quantize llama-cli`).
# Needs torch, numpy, sentencepiece.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
models="$here/../../fixtures/models"
bitnet="$(cd "$1" && pwd)"
fork="$bitnet/3rdparty/llama.cpp"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
convert() { PYTHONPATH="$fork/gguf-py" python3 "$bitnet/utils/convert-hf-to-gguf-bitnet.py" "$@"; }

convert "$models/tiny-bitnet-1bitllm" --outtype f16 --outfile "$models/tiny-bitnet-1bitllm-bitnetcpp-f16.gguf"

# I2_S came from bitnet.cpp 1.0's C++ quantizer; its kernels need rows of whole 128-weight blocks.
convert "$models/tiny-bitnet-1bitllm-128" --outtype f32 --outfile "$tmp/f32.gguf"
"$bitnet/build/bin/llama-quantize" "$tmp/f32.gguf" "$models/tiny-bitnet-1bitllm-128-bitnetcpp-i2_s.gguf" I2_S 1

# bitnet.cpp's own forward pass on that file, through its libllama.
lib="$bitnet/build/3rdparty/llama.cpp"
clang++ -O2 -std=c++17 -I"$fork/include" -I"$fork/ggml/include" "$here/../bitnetcpp-logits/logits.cpp" \
    -L"$lib/src" -L"$lib/ggml/src" -lllama -lggml -Wl,-rpath,"$lib/src:$lib/ggml/src" -o "$tmp/logits"
tokens="$(python3 -c "import json, sys; print(','.join(map(str, json.load(open(sys.argv[1]))['tokens'])))" \
    "$models/tiny-bitnet-1bitllm-128/reference.json")"
"$tmp/logits" "$models/tiny-bitnet-1bitllm-128-bitnetcpp-i2_s.gguf" "$tokens" 12 \
    > "$models/tiny-bitnet-1bitllm-128-bitnetcpp-i2_s.json"

# The other direction: bitnet.cpp (a llama.cpp fork) reading files *we* write. A ternary Llama
# (Falcon3 layout) converted by `bitnet convert` to I2_S, TQ1_0 and TQ2_0; bitnet.cpp's logits and
# greedy tokens on each, with the SHA-256 of the file it read (the test re-converts and compares).
root="$here/../.."
out="$models/tiny-llama-ternary-256-bitnetcpp.json"
tokens="$(python3 -c "import json, sys; print(','.join(map(str, json.load(open(sys.argv[1]))['tokens'])))" \
    "$models/tiny-llama-ternary-256/reference.json")"
for t in i2_s tq1_0 tq2_0; do
    (cd "$root" && cargo run -q --release -p bitnet-cli -- convert fixtures/models/tiny-llama-ternary-256 \
        -o "$tmp/llama-$t.gguf" --outtype "$t" --embedding-type f16)
    "$tmp/logits" "$tmp/llama-$t.gguf" "$tokens" 12 > "$tmp/llama-$t.json"
done
python3 - "$tmp" "$out" <<'PY'
import hashlib, json, sys
tmp, out = sys.argv[1], sys.argv[2]
files = {}
for t in ("i2_s", "tq1_0", "tq2_0"):
    r = json.load(open(f"{tmp}/llama-{t}.json"))
    entry = {"sha256": hashlib.sha256(open(f"{tmp}/llama-{t}.gguf", "rb").read()).hexdigest(), "greedy": r["greedy"]}
    if t == "i2_s":
        entry["logits"] = [[round(v, 4) for v in row] for row in r["logits"]]
    files[t] = entry
json.dump({"made_by": "tools/reference/bitnetcpp_fixture.sh", "engine": "bitnet.cpp 1.0 (c82b5e6 + 406a5036)",
           "converted_with": "bitnet convert fixtures/models/tiny-llama-ternary-256 --outtype T --embedding-type f16",
           "files": files}, open(out, "w"))
PY

# llama.cpp's own `bitnet` architecture with TQ1_0 / TQ2_0 tensors: the llama.cpp converter inside
# that checkout, with PyPI's gguf 0.19 (NO_LOCAL_GGUF: its bundled gguf-py writes wrong shapes for
# TQ rows of more than one block), on the 256-wide 1bitLLM checkpoint.
for t in tq1_0 tq2_0; do
    NO_LOCAL_GGUF=1 python3 "$fork/convert_hf_to_gguf.py" "$models/tiny-bitnet-1bitllm-256" --outtype "$t" \
        --outfile "$models/tiny-bitnet-1bitllm-256-llamacpp-$t.gguf"
done
