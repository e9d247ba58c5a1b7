#!/usr/bin/env python3
"""Trains the small BitNet b1.58 model that ships in fixtures/ (issue: a demo that needs no download).

Quantization-aware training of BitNet b1.58 2B-4T's graph, scaled down, using transformers' own
BitNetForCausalLM with `quantization_config` {quant_method: bitnet, linear_class: autobitlinear,
quantization_mode: online}: every linear layer ternarizes its weights (absmean) and quantizes its
input activations (per-token absmax int8) in the forward pass, with straight-through gradients.

Training text (on this machine, permissively licensed):
  * The Rust Programming Language book, HTML shipped with the Rust toolchain (MIT / Apache-2.0);
  * docstrings of the Python standard library's modules (PSF License).
5% of the documents (by a hash of their text) are held out for validation.

    python3 tools/train-tiny/train.py --minutes 40 --out /tmp/tiny-trained
then convert and ship:
    cargo run --release -p bitnet-cli -- convert /tmp/tiny-trained -o fixtures/models/bitnet-tiny-demo.gguf
"""
import argparse
import ast
import glob
import hashlib
import html
import json
import math
import os
import re
import subprocess
import sys
import sysconfig
import time

import torch
from transformers import AutoModelForCausalLM, BitNetConfig, PreTrainedTokenizerFast

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from tiny_models import SPECIALS, make_tokenizer as _make_tokenizer  # noqa: E402  (shared with the fixtures)


def rust_book():
    root = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True).stdout.strip()
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "share/doc/rust/html/book/ch*.html"))):
        page = open(path, encoding="utf-8", errors="replace").read()
        paras = []
        for p in re.findall(r"<p>(.*?)</p>", page, flags=re.S):
            text = html.unescape(re.sub(r"<[^>]+>", "", p))
            text = re.sub(r"\s+", " ", text).strip()
            if len(text) > 40:
                paras.append(text)
        if paras:
            docs.append("\n".join(paras))
    return docs


def python_docstrings():
    root = sysconfig.get_paths()["stdlib"]
    docs = []
    for d, _, files in sorted(os.walk(root)):
        parts = d.split(os.sep)
        if "site-packages" in parts or "test" in parts or "tests" in parts or "idlelib" in parts:
            continue
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            try:
                tree = ast.parse(open(os.path.join(d, f), encoding="utf-8").read())
            except (SyntaxError, UnicodeDecodeError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    s = ast.get_docstring(node)
                    if s and len(s) > 40:
                        docs.append(s)
    return docs


def split(docs):
    train, val = [], []
    for doc in docs:
        (val if hashlib.sha256(doc.encode()).digest()[0] < 13 else train).append(doc)  # ~5%
    return train, val


def make_tokenizer(texts, vocab_size):
    return _make_tokenizer(vocab_size, texts)


def encode_all(tok, docs):
    bos, eos = tok.token_to_id(SPECIALS[0]), tok.token_to_id(SPECIALS[1])
    ids = []
    for enc in tok.encode_batch(docs):
        ids.append(bos)
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def batches(data, batch, seq, gen):
    while True:
        starts = torch.randint(0, len(data) - seq - 1, (batch,), generator=gen)
        x = torch.stack([data[s : s + seq] for s in starts])
        y = torch.stack([data[s + 1 : s + seq + 1] for s in starts])
        yield x, y


@torch.no_grad()
def evaluate(model, data, seq, max_windows=64):
    model.eval()
    losses = []
    n = min(max_windows, (len(data) - 1) // seq)
    for i in range(n):
        x = data[i * seq : (i + 1) * seq][None]
        y = data[i * seq + 1 : (i + 1) * seq + 1][None]
        logits = model(x).logits
        losses.append(torch.nn.functional.cross_entropy(logits[0], y[0]).item())
    model.train()
    return sum(losses) / len(losses)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=40.0, help="training time budget")
    ap.add_argument("--out", required=True, help="directory for the Hugging Face checkpoint")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 2)

    docs = rust_book() + python_docstrings()
    train_docs, val_docs = split(docs)
    print(f"corpus: {len(docs)} documents, {sum(map(len, docs)) / 1e6:.2f} MB; {len(val_docs)} held out", flush=True)
    tok = make_tokenizer(train_docs, args.vocab)
    train, val = encode_all(tok, train_docs), encode_all(tok, val_docs)
    print(f"tokens: {len(train)} train, {len(val)} validation", flush=True)

    cfg = BitNetConfig(vocab_size=tok.get_vocab_size(), hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                       num_hidden_layers=args.layers, num_attention_heads=8, num_key_value_heads=2,
                       max_position_embeddings=args.seq * 2, rms_norm_eps=1e-5, hidden_act="relu2",
                       rope_theta=500000.0, tie_word_embeddings=True,
                       bos_token_id=tok.token_to_id(SPECIALS[0]), eos_token_id=tok.token_to_id(SPECIALS[1]))
    os.makedirs(args.out, exist_ok=True)
    float_model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    float_model.save_pretrained(args.out)
    conf = json.load(open(os.path.join(args.out, "config.json")))
    conf["quantization_config"] = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}
    json.dump(conf, open(os.path.join(args.out, "config.json"), "w"), indent=2)
    model = AutoModelForCausalLM.from_pretrained(args.out, dtype=torch.float32)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.05)
    gen = torch.Generator().manual_seed(0)
    budget = args.minutes * 60
    start = time.time()
    step, warmup = 0, 100
    for x, y in batches(train, args.batch, args.seq, gen):
        elapsed = time.time() - start
        if elapsed > budget:
            break
        frac = elapsed / budget
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            print(f"step {step} {elapsed / 60:5.1f} min lr {lr:.2e} loss {loss.item():.3f}", flush=True)
        step += 1

    val_loss = evaluate(model, val, args.seq)
    tokens_seen = step * args.batch * args.seq
    print(f"done: {step} steps, {tokens_seen / 1e6:.1f}M tokens; validation loss {val_loss:.3f} "
          f"(perplexity {math.exp(val_loss):.2f})", flush=True)
    model.save_pretrained(args.out)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIALS[0], eos_token=SPECIALS[1])
    fast.save_pretrained(args.out)
    with open(os.path.join(args.out, "validation.txt"), "w") as f:
        f.write("\n\n".join(val_docs))
    json.dump({"steps": step, "tokens": tokens_seen, "val_loss": val_loss, "val_ppl": math.exp(val_loss),
               "params": n_params, "minutes": (time.time() - start) / 60},
              open(os.path.join(args.out, "training.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
