#!/usr/bin/env python3
"""Writes fixtures/reference/spm.json: a small SentencePiece BPE vocabulary trained with Google's
`sentencepiece` (the library behind Llama 1/2 and 1bitLLM tokenizers), with Llama's options
(byte fallback, dummy prefix, identity normalization, digits split), and the ids and text
sentencepiece itself gives for a set of strings. The Rust tests build a GGUF `llama` vocabulary
from the pieces, scores and types exactly as llama.cpp's converter does and must reproduce both.

    pip install sentencepiece==0.2.1   # or newer
    python3 tools/reference/spm_fixture.py
"""
import io
import os

import sentencepiece as spm

from common import write_fixture

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "../../fixtures/models/bitnet-demo-heldout.txt")

CASES = [
    "Hello world",
    " leading space and  two  spaces",
    "The function returns a new list of the items.",
    "Numbers 12345 and 3.14159",
    "tabs\tand\nnew lines\n\nend",
    "accents: café, naïve, Zürich",
    "emoji 🦀 and 漢字",
    "",
    "   ",
    "self.assertEqual(x, [1, 2, 3])",
]

# GGUF token types (llama.cpp's llama_token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def train(vocab_size=600):
    """A SentencePiece BPE model (serialized proto) trained on the demo model's held-out text with
    Llama's options."""
    with open(CORPUS, encoding="utf-8") as f:
        text = f.read()
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
    )
    return model.getvalue()


def main():
    model = train()
    sp = spm.SentencePieceProcessor(model_proto=model)
    pieces, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        pieces.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(UNKNOWN)
        elif sp.is_control(i):
            types.append(CONTROL)
        elif sp.is_byte(i):
            types.append(BYTE)
        elif sp.is_unused(i):
            types.append(UNUSED)
        else:
            types.append(NORMAL)
    cases = [{"text": t, "ids": sp.encode(t), "decoded": sp.decode(sp.encode(t))} for t in CASES]
    write_fixture("spm.json", {
        "made_by": "tools/reference/spm_fixture.py",
        "sentencepiece": spm.__version__,
        "tokens": pieces, "scores": scores, "token_type": types,
        "bos": sp.bos_id(), "eos": sp.eos_id(), "unk": sp.unk_id(),
        "cases": cases,
    })


if __name__ == "__main__":
    main()
