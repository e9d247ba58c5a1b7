#!/usr/bin/env python3
"""Builds tiny random BitNet checkpoints with transformers itself and records its forward pass.

For each architecture below this writes, under fixtures/models/NAME/:
  config.json, model.safetensors, tokenizer.json, tokenizer_config.json   (a Hugging Face checkpoint)
  reference.json   transformers' logits for a token sequence and its greedy continuation

The tokenizer is a small byte-level BPE trained here with the `tokenizers` library, Llama 3 style
(same split regex, byte-level alphabet, <|begin_of_text|>/<|end_of_text|>). The checkpoints are
what `cargo xtask convert` / the model tests turn into GGUF and compare against.

    python3 tools/reference/tiny_models.py   (requirements.txt in this folder)
"""
import glob
import inspect
import json
import os
import shutil
import sys
import tempfile

import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, BitNetConfig, LlamaConfig, PreTrainedTokenizerFast
from transformers.integrations.bitnet import pack_weights

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "../../fixtures/models"))
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]


def corpus():
    """English text that ships with Python itself: the standard library's docstrings (PSF licence)."""
    import collections, json as j, textwrap, argparse, functools, itertools, pathlib
    texts = []
    for mod in (collections, j, textwrap, argparse, functools, itertools, pathlib):
        for _, obj in inspect.getmembers(mod):
            doc = inspect.getdoc(obj)
            if doc:
                texts.append(doc)
    return texts


def make_tokenizer(vocab_size, texts=None):
    """Byte-level BPE, Llama 3 style; trained on `texts` (default: the stdlib docstring corpus)."""
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus() if texts is None else texts, trainer)
    return tok


ONLINE = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}
# Falcon3-*-1.58bit / Llama3-8B-1.58 style: packed uint8 weights, weight_scale divided (BitLinear).
PACKED = {"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"}

ARCHS = {
    # BitNet b1.58 2B-4T's graph scaled down: GQA, sub-norms, squared ReLU, tied embeddings,
    # bf16-master-style checkpoint quantized online (AutoBitLinear, quantization_mode "online").
    "tiny-bitnet-b1.58": dict(
        config_class=BitNetConfig, quant=ONLINE,
        config=dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, hidden_act="relu2",
                    rope_theta=500000.0, tie_word_embeddings=True),
        vocab=384,
    ),
    # The same graph with rows of 256, so that TQ1_0/TQ2_0 (256-element blocks) can hold it.
    "tiny-bitnet-b1.58-256": dict(
        config_class=BitNetConfig, quant=ONLINE,
        config=dict(hidden_size=256, intermediate_size=512, num_hidden_layers=1, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, hidden_act="relu2",
                    rope_theta=500000.0, tie_word_embeddings=True),
        vocab=384,
    ),
    # A ternary Llama (Falcon3-1.58bit layout): packed weights, untied lm_head, SiLU, no sub-norms.
    "tiny-llama-ternary": dict(
        config_class=LlamaConfig, quant=PACKED,
        config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, hidden_act="silu",
                    rope_theta=1000042.0, tie_word_embeddings=False),
        vocab=384,
    ),
}
# The same ternary Llama with rows of 256 (TQ1_0/TQ2_0 blocks, whole I2_S blocks for bitnet.cpp's
# kernels): what tools/reference/bitnetcpp_fixture.sh runs through bitnet.cpp.
ARCHS["tiny-llama-ternary-256"] = dict(
    ARCHS["tiny-llama-ternary"],
    config=dict(ARCHS["tiny-llama-ternary"]["config"], hidden_size=256, intermediate_size=512, num_hidden_layers=1),
)

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def pack_checkpoint(directory):
    """Rewrites a float checkpoint as transformers' packed ternary one: each linear weight W becomes
    pack_weights(round(W/mean|W|).clamp(-1, 1)) (uint8, [out/4, in]) plus weight_scale = 1/mean|W|."""
    from safetensors.torch import load_file, save_file
    path = os.path.join(directory, "model.safetensors")
    tensors = load_file(path)
    out = {}
    for name, w in tensors.items():
        if name.endswith(".weight") and name.split(".")[-2] in LINEARS:
            mean = w.abs().mean().clamp(min=1e-5)
            t = (w / mean).round().clamp(-1, 1)
            out[name] = pack_weights(t.clone())
            out[name[: -len("weight")] + "weight_scale"] = (1.0 / mean).reshape(1).to(torch.float32)
        else:
            out[name] = w
    save_file(out, path, metadata={"format": "pt"})


def build(name, spec):
    torch.manual_seed(1234)
    out = os.path.join(OUT, name)
    tok = make_tokenizer(spec["vocab"])
    vocab = tok.get_vocab_size()
    bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|end_of_text|>")
    cfg = spec["config_class"](vocab_size=vocab, bos_token_id=bos, eos_token_id=eos, **spec["config"])
    with tempfile.TemporaryDirectory() as tmp:
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        # Larger-than-default weights so that the tiny model's logits are not all near zero.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 0.5)
        model.save_pretrained(tmp)
        if spec["quant"] is PACKED:
            pack_checkpoint(tmp)
        config = json.load(open(os.path.join(tmp, "config.json")))
        config["quantization_config"] = spec["quant"]
        json.dump(config, open(os.path.join(tmp, "config.json"), "w"), indent=2)
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(tmp, f), out)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    fast.save_pretrained(out)
    for extra in glob.glob(os.path.join(out, "special_tokens_map.json")):
        os.remove(extra)

    text = "The function returns a new list of the items."
    ids = [bos] + tok.encode(text).ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
        gen = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                             pad_token_id=eos)[0].tolist()
    ref = {
        "made_by": "tools/reference/tiny_models.py",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "text": text, "tokens": ids,
        "logits": [[round(float(v), 6) for v in row] for row in logits],
        "greedy": gen[len(ids):],
        "tokenizer_cases": {s: tok.encode(s).ids for s in
                            [text, "Hello, world!  It's 2026.\n\tTabs\tand   spaces", "über naïve café ✓ 日本",
                             "<|begin_of_text|>special<|eot_id|>"]},
    }
    json.dump(ref, open(os.path.join(out, "reference.json"), "w"))
    print(f"wrote {out}: vocab {vocab}, {sum(p.numel() for p in model.parameters())} parameters")


if __name__ == "__main__":
    for name, spec in ARCHS.items():
        if len(sys.argv) < 2 or name in sys.argv[1:]:
            build(name, spec)
