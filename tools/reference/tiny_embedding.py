#!/usr/bin/env python3
"""Builds tiny random ternary embedding checkpoints (bitnet-embedding style) with transformers
itself and records their pooled, normalised embeddings.

For each model below this writes, under fixtures/models/NAME/ (a Hugging Face checkpoint laid out
like microsoft/bitnet-embedding-0.6b / -270m):
  config.json              stock Qwen3Model / Gemma3TextModel config with a BitNet
                           quantization_config (autobitlinear, online, use_rms_norm)
  model.safetensors        f32 master weights; each projection's input RMSNorm is stored as
                           `*_proj.norm.weight`, the name the real checkpoints (and bitnet.cpp's
                           converter) use; transformers calls it `*_proj.rms_norm.weight`
  tokenizer.json, tokenizer_config.json, modules.json, 1_Pooling/config.json
  reference.json           texts, transformers' token ids and embeddings (pooled as modules.json
                           says, L2-normalised), and the same graph with every linear computed as
                           an exact integer product (our engine's accumulation order)

    /path/to/venv/bin/python tools/reference/tiny_embedding.py   (requirements.txt in this folder)
"""
import json
import os
import shutil
import tempfile
import zlib

import torch
import transformers
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoModel, Gemma3TextConfig, Gemma3TextModel, PreTrainedTokenizerFast, Qwen3Config, Qwen3Model
from transformers.integrations.bitnet import AutoBitLinear

from tiny_models import corpus

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "../../fixtures/models"))
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QUANT = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online",
         "use_rms_norm": True, "rms_norm_eps": 1e-6}

TEXTS = [
    "query: What is BitNet?",
    "BitNet b1.58 stores every weight as -1, 0 or +1 and runs on ordinary CPUs.",
    "The quick brown fox jumps over the lazy dog.",
    # Long enough to cross the Gemma model's sliding window several times.
    " ".join(["Return a new list containing all items from the iterable in ascending order."] * 6),
]


def qwen_tokenizer():
    """Byte-level BPE with Qwen2's split regex; the post-processor appends <|endoftext|> as
    Qwen3-Embedding's tokenizer does (last-token pooling reads it)."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    eos = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", eos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    return fast


def gemma_tokenizer():
    """SentencePiece-style BPE as Gemma's tokenizer.json has it: `▁` for spaces, no prefix,
    byte fallback to <0xXX> pieces; <bos> first and <eos> last."""
    trained = Tokenizer(models.BPE())
    trained.normalizer = normalizers.Replace(" ", "▁")
    trained.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=700, show_progress=False))
    learned = json.loads(trained.to_str())["model"]
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>"])}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(t, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(["<pad>", "<eos>", "<bos>", "<unk>"])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
                                   pad_token="<pad>")


MODELS = {
    # Qwen3-0.6B's graph scaled down: head_dim ≠ hidden/heads, GQA, q/k norms, last-token pooling.
    "tiny-qwen3-embedding": dict(
        model_class=Qwen3Model, config_class=Qwen3Config, tokenizer=qwen_tokenizer, pooling="lasttoken",
        config=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=64, max_position_embeddings=512, rms_norm_eps=1e-6,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True,
                    hidden_act="silu"),
    ),
    # Gemma3-270M's graph scaled down: √hidden embedding scale, head_dim 128 with 2 heads, GELU-tanh,
    # post-attention/post-FFN norms, a sliding window (16) on two of three layers with its own RoPE
    # base, mean pooling.
    "tiny-gemma3-embedding": dict(
        model_class=Gemma3TextModel, config_class=Gemma3TextConfig, tokenizer=gemma_tokenizer, pooling="mean",
        config=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=128, query_pre_attn_scalar=128, max_position_embeddings=512,
                    rms_norm_eps=1e-6, sliding_window=16,
                    layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                    rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
                    hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
                    pad_token_id=0, eos_token_id=1, bos_token_id=2),
    ),
}


def exact_integer_forward(self, x):
    """AutoBitLinear with the product done exactly in integers (f64 holds every partial sum), then
    scaled once: the order our kernels accumulate in."""
    if self.rms_norm is not None:
        x = self.rms_norm(x)
    w = self.weight.double()
    w_mean = w.abs().mean().clamp(min=1e-5)
    wq = (w / w_mean).round().clamp(-1, 1)
    # The weight scale as transformers computes it (f32), the activations per row in f32.
    w_scale = self.weight.float().abs().mean().clamp(min=1e-5)
    xf = x.float()
    a_scale = 127 / xf.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    xq = (xf * a_scale).round().clamp(-128, 127).double()
    y = (xq @ wq.T).float() / a_scale * w_scale
    return y.to(x.dtype)


def pooled(model, ids, pooling):
    with torch.no_grad():
        h = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    v = h[-1] if pooling == "lasttoken" else h.mean(dim=0)
    return torch.nn.functional.normalize(v.double(), dim=0).float().tolist()


def build(name, spec):
    out = os.path.join(OUT, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    torch.manual_seed(zlib.crc32(name.encode()))
    tokenizer = spec["tokenizer"]()
    cfg = spec["config_class"](vocab_size=len(tokenizer), **spec["config"])
    model = spec["model_class"](cfg).float().eval()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        weights = load_file(os.path.join(tmp, "model.safetensors"))
    # Norm weights near 1 (Gemma's own norms near 0: it multiplies by 1 + w) so they matter.
    for k in list(weights):
        if k.endswith("norm.weight"):
            base = 0.0 if spec["model_class"] is Gemma3TextModel else 1.0
            weights[k] = base + 0.1 * torch.randn_like(weights[k])
        if k.endswith("_proj.weight"):
            weights[k.replace(".weight", ".norm.weight")] = 1.0 + 0.2 * torch.randn(weights[k].shape[1])
    save_file(weights, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    config = json.loads(cfg.to_json_string())
    config["quantization_config"] = QUANT
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    tokenizer.save_pretrained(out)
    with open(os.path.join(out, "modules.json"), "w") as f:
        json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                   {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
                  f, indent=2)
    os.makedirs(os.path.join(out, "1_Pooling"))
    with open(os.path.join(out, "1_Pooling", "config.json"), "w") as f:
        modes = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": spec["pooling"] == "mean",
                 "pooling_mode_lasttoken": spec["pooling"] == "lasttoken"}
        json.dump({"word_embedding_dimension": cfg.hidden_size, **modes}, f, indent=2)

    # transformers names the per-projection norm `rms_norm`: load a renamed copy.
    with tempfile.TemporaryDirectory() as tmp:
        for f in os.listdir(out):
            if os.path.isfile(os.path.join(out, f)):
                shutil.copy(os.path.join(out, f), tmp)
        renamed = {k.replace("_proj.norm.weight", "_proj.rms_norm.weight"): v for k, v in weights.items()}
        save_file(renamed, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        ref = AutoModel.from_pretrained(tmp, dtype=torch.float32).eval()
    linears = [m for m in ref.modules() if isinstance(m, AutoBitLinear)]
    assert linears and all(m.rms_norm is not None and m.online_quant for m in linears), "not quantized"
    state = ref.state_dict()
    for k, v in renamed.items():  # every per-projection norm loaded, none left at its init
        assert torch.equal(state[k], v), k

    texts = []
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        emb = pooled(ref, ids, spec["pooling"])
        texts.append({"text": text, "ids": ids, "embedding": emb})
    AutoBitLinear.forward, saved = exact_integer_forward, AutoBitLinear.forward
    try:
        for t in texts:
            t["embedding_integer_order"] = pooled(ref, t["ids"], spec["pooling"])
    finally:
        AutoBitLinear.forward = saved
    reference = {"transformers": transformers.__version__, "torch": torch.__version__, "pooling": spec["pooling"],
                 "normalize": "l2", "texts": texts}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    print("wrote", out, [len(t["ids"]) for t in texts])


if __name__ == "__main__":
    for name, spec in MODELS.items():
        build(name, spec)
