#!/usr/bin/env bash
# Writes fixtures/models/tiny-bitnet-1bitllm-bitnetcpp-f16.gguf with bitnet.cpp's own converter, so
# the tests load a GGUF that bitnet.cpp made (not one of ours).
#
#   tools/reference/bitnetcpp_fixture.sh BITNET_CHECKOUT LLAMA_FORK_CHECKOUT
#
# BITNET_CHECKOUT: microsoft/BitNet at c82b5e6 (bitnet.cpp 1.0, 2024-10-18; its converter writes
# 1bitLLM models as architecture `bitnet`). LLAMA_FORK_CHECKOUT: its llama.cpp submodule at that
# commit (Eddie-Wang1120/llama.cpp 406a5036), whose gguf-py the converter needs. That converter's
# --outtype takes f32, f16, tl1 and tl2 (I2_S came from its C++ llama-quantize); f16 is written here.
# Needs torch, numpy, sentencepiece.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
bitnet="$1"
fork="$2"
PYTHONPATH="$fork/gguf-py" python3 "$bitnet/utils/convert-hf-to-gguf-bitnet.py" \
    "$root/fixtures/models/tiny-bitnet-1bitllm" --outtype f16 \
    --outfile "$root/fixtures/models/tiny-bitnet-1bitllm-bitnetcpp-f16.gguf"
