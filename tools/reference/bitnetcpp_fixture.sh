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
