#!/usr/bin/env python3
"""Records transformers' forward pass of the trained demo checkpoint, for the agreement test.

    python3 tools/train-tiny/reference.py /tmp/tiny-trained fixtures/models/bitnet-demo.reference.json
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    src, out = sys.argv[1], sys.argv[2]
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    # The shipped GGUF stores the (tied) embedding table in F16: round it the same way here.
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.copy_(emb.half().float())
    text = "The Rust compiler checks that references"
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
        gen = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, eos_token_id=None,
                             pad_token_id=tok.eos_token_id)[0].tolist()
    json.dump({"made_by": "tools/train-tiny/reference.py", "text": text, "tokens": ids,
               "logits": [[round(float(v), 5) for v in row] for row in logits], "greedy": gen[len(ids):],
               "tokenizer_cases": {}}, open(out, "w"))
    print("greedy:", repr(tok.decode(gen[len(ids):])))


if __name__ == "__main__":
    main()
