#!/usr/bin/env python3
"""Builds a tiny checkpoint in 1bitLLM's format (bitnet_b1_58-large / -3B: `BitnetForCausalLM`,
float16 master weights, quantized by the model code at run time, SentencePiece tokenizer.model)
and records a forward pass of it.

1bitLLM's modeling code (modeling_bitnet.py, utils_quant.py) lives on the Hugging Face hub only; a
copy is in microsoft/BitBLAS integration/BitNet. Its graph is the Llama decoder with BitLinear
layers (per-tensor absmean ternary weights, per-token absmax int8 activations, both quantized in
f32), an RMSNorm `self_attn.inner_attn_ln` before o_proj and `mlp.ffn_layernorm` before down_proj,
SiLU-gated FFN, rotate-half RoPE and the head tied to the embeddings. transformers' `BitNetForCausalLM` with `hidden_act="silu"`
and online AutoBitLinear quantization (the same weight_quant/activation_quant formulas) computes
that graph, so the reference logits come from transformers with the two sub-norms renamed to its
`attn_sub_norm`/`ffn_sub_norm`. Tokenizations come from Google's sentencepiece.

Cross-check: `--check PATH/TO/BitBLAS/integration/BitNet` runs 1bitLLM's own model code (that copy,
outside this repository, with the GPU-only `bitblas` import stubbed out) on the written checkpoint
and compares its logits with reference.json (2026-11-23: max difference 9.1e-6 of a range of 15).

Writes fixtures/models/tiny-bitnet-1bitllm{,-128,-256}/ (see VARIANTS): config.json,
model.safetensors, tokenizer.model, tokenizer_config.json, generation_config.json, reference.json.

    python3 tools/reference/tiny_1bitllm.py [--check DIR]   (requirements.txt here, plus sentencepiece)
"""
import json
import os
import shutil
import sys
import tempfile
import types

import sentencepiece as spm
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, BitNetConfig

from spm_fixture import train
from tiny_models import ONLINE, OUT

NAME = "tiny-bitnet-1bitllm"
# Variants: name -> config changes. The 128-wide one has rows bitnet.cpp 1.0's I2_S kernels take
# (multiples of 128), for files made by bitnet.cpp itself (tools/reference/bitnetcpp_fixture.sh).
VARIANTS = {
    NAME: {},
    NAME + "-128": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=1),
    # Rows of 256: TQ1_0/TQ2_0 blocks, for llama.cpp's own converter (`bitnet` architecture).
    NAME + "-256": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=1),
}
# Two ids past the SentencePiece pieces, as 1bitLLM's vocab_size (32002) exceeds its 32000 pieces:
# converters pad the GGUF vocabulary with [PAD1], [PAD2].
EXTRA = 2
CONFIG = dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=4, max_position_embeddings=256, rms_norm_eps=1e-5, hidden_act="silu",
              rope_theta=10000.0, tie_word_embeddings=True)
# 1bitLLM name -> transformers BitNet name.
RENAME = {"self_attn.inner_attn_ln.": "self_attn.attn_sub_norm.", "mlp.ffn_layernorm.": "mlp.ffn_sub_norm."}


def main(name=NAME):
    torch.manual_seed(4321)
    out = os.path.join(OUT, name)
    arch = {**CONFIG, **VARIANTS[name]}
    proto = train(600)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    vocab = sp.get_piece_size() + EXTRA
    cfg = BitNetConfig(vocab_size=vocab, bos_token_id=sp.bos_id(), eos_token_id=sp.eos_id(), pad_token_id=None,
                       **arch)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
            else:
                p.uniform_(0.5, 1.5)
    # The checkpoint is float16 like 1bitLLM's; the reference runs on the same f16 values in f32.
    # Tied like 1bitLLM's checkpoints (bitnet.cpp's converter has no tensor to map an lm_head to).
    state = {k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    inverse = {v: k for k, v in RENAME.items()}
    ckpt = {}
    for name, t in state.items():
        for new, old in inverse.items():
            name = name.replace(new, old)
        ckpt[name] = t

    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    save_file(ckpt, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(proto)
    config = {
        "architectures": ["BitnetForCausalLM"], "model_type": "llama", "torch_dtype": "float16",
        "bos_token_id": sp.bos_id(), "eos_token_id": sp.eos_id(), "pad_token_id": vocab - 1,
        "hidden_size": arch["hidden_size"], "intermediate_size": arch["intermediate_size"],
        "num_hidden_layers": arch["num_hidden_layers"], "num_attention_heads": arch["num_attention_heads"],
        "num_key_value_heads": arch["num_key_value_heads"], "hidden_act": "silu",
        "max_position_embeddings": arch["max_position_embeddings"], "rms_norm_eps": arch["rms_norm_eps"],
        "rope_theta": arch["rope_theta"], "rope_scaling": None, "tie_word_embeddings": True,
        "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": True, "vocab_size": vocab,
        "input_bits": 8, "weight_bits": 1, "transformers_version": "4.39.0",
    }
    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)
    json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
               "unk_token": "<unk>", "pad_token": None, "legacy": False, "tokenizer_class": "BitnetTokenizer",
               "model_max_length": arch["max_position_embeddings"]},
              open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
    json.dump({"bos_token_id": sp.bos_id(), "eos_token_id": sp.eos_id(), "pad_token_id": vocab - 1},
              open(os.path.join(out, "generation_config.json"), "w"), indent=2)

    # Reference: transformers' BitNet graph on the f16 weights, renamed back.
    with tempfile.TemporaryDirectory() as tmp:
        cfg.quantization_config = ONLINE
        cfg.save_pretrained(tmp)
        save_file({k: v.to(torch.float32) for k, v in state.items()}, os.path.join(tmp, "model.safetensors"),
                  metadata={"format": "pt"})
        ref_model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()

    text = "The function returns a new list of the items."
    ids = [sp.bos_id()] + sp.encode(text)
    with torch.no_grad():
        logits = ref_model(torch.tensor([ids])).logits[0]
        gen = ref_model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                                 pad_token_id=sp.eos_id())[0].tolist()
    cases = [text, "Hello, world!  It's 2026.\n\tTabs\tand   spaces", "über naïve café ✓ 日本", " leading space"]
    ref = {
        "made_by": "tools/reference/tiny_1bitllm.py",
        "torch": torch.__version__, "transformers": transformers.__version__, "sentencepiece": spm.__version__,
        "text": text, "tokens": ids,
        "logits": [[round(float(v), 6) for v in row] for row in logits],
        "greedy": gen[len(ids):],
        "tokenizer_cases": {s: sp.encode(s) for s in cases},
    }
    json.dump(ref, open(os.path.join(out, "reference.json"), "w"))
    print(f"wrote {out}: vocab {vocab}, {sum(p.numel() for p in ref_model.parameters())} parameters")


def check(code_dir, name=NAME):
    """Runs 1bitLLM's modeling_bitnet.py from `code_dir` on a fixture; prints the logit difference."""
    stub = types.ModuleType("bitblas")
    stub.Matmul = stub.MatmulConfig = None
    stub.auto_detect_nvidia_target = lambda: None
    cache = types.ModuleType("bitblas.cache")
    cache.global_operator_cache, cache.get_database_path = None, lambda: None
    sys.modules.update({"bitblas": stub, "bitblas.cache": cache})
    sys.path.insert(0, code_dir)
    import modeling_bitnet
    from configuration_bitnet import BitnetConfig
    out = os.path.join(OUT, name)
    cfg = json.load(open(os.path.join(out, "config.json")))
    skip = ("architectures", "model_type", "torch_dtype", "transformers_version")
    c = BitnetConfig(**{k: v for k, v in cfg.items() if k not in skip})
    c._attn_implementation, c.rope_scaling = "eager", None
    # Its list-style _tied_weights_keys predates transformers 5: tie by hand instead.
    modeling_bitnet.BitnetForCausalLM._tied_weights_keys = {}
    model = modeling_bitnet.BitnetForCausalLM(c).float().eval()
    state = {k: v.float() for k, v in load_file(os.path.join(out, "model.safetensors")).items()}
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("rotary_emb.inv_freq") for k in missing), (missing, unexpected)
    ref = json.load(open(os.path.join(out, "reference.json")))
    with torch.no_grad():
        logits = model(torch.tensor([ref["tokens"]]), use_cache=False).logits[0]
    want = torch.tensor(ref["logits"])
    print(f"1bitLLM code vs reference.json: max |diff| {(logits - want).abs().max().item():.3g}, "
          f"range {want.abs().max().item():.3g}, argmax equal: {bool((logits.argmax(-1) == want.argmax(-1)).all())}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        for variant in VARIANTS:
            check(sys.argv[2], variant)
    else:
        for variant in VARIANTS:
            main(variant)
