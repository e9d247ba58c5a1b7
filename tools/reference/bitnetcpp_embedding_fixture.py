#!/usr/bin/env python3
"""Runs bitnet.cpp's own embedding converter (utils/convert-bitnet-embedding-to-gguf.py from a
microsoft/BitNet checkout) on the tiny embedding checkpoints, writing
fixtures/models/tiny-{qwen3,gemma3}-embedding-bitnetcpp-i2_s.gguf: files laid out exactly as
bitnet.cpp's converter lays them out (F16 norms and embeddings, I2_S with the scale after the
codes, its tensor names and keys), which crates/model/tests/embedding.rs loads and checks against
transformers' reference.

    python3 tools/reference/bitnetcpp_embedding_fixture.py PATH/TO/convert-bitnet-embedding-to-gguf.py

Nothing of bitnet.cpp is committed; get the script with e.g.
    git --git-dir=/work/.mirror/microsoft+BitNet/repo show HEAD:utils/convert-bitnet-embedding-to-gguf.py > /tmp/c.py

Three shims, because the script expects bitnet.cpp's vendored gguf-py and the real vocabularies:
- PyPI's gguf has no I2_S type (id 36 in bitnet.cpp's ggml): the id is given to the writer as a
  plain integer and the writer's byte-shape conversion is skipped for it (the script passes the
  element shape itself);
- the pre-tokenizer check hashes the encoding of a fixed text and knows only the real models'
  hashes: the tiny Qwen3 tokenizer is declared "qwen2" (its split regex is Qwen2's);
- the script hard-codes EOS id 151643 (the real Qwen3 vocabulary's <|endoftext|>), out of range for
  the tiny vocabulary: the tiny tokenizer's own <|endoftext|> id is used instead.
And the script reads `rope_theta` at the top of config.json, where transformers 4 (and the released
checkpoints) keep it; transformers 5 moved it into `rope_parameters`, so the converter is given a
copy of each checkpoint whose config.json has it at the top too (the full-attention base).
Its files carry no sliding window (the script writes none), so the Gemma file attends globally.
"""
import importlib.util
import json
import os
import shutil
import sys
import tempfile

import gguf
import gguf.gguf_writer

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.normpath(os.path.join(HERE, "../../fixtures/models"))
I2_S = 36


def main():
    script = sys.argv[1]
    source = open(script).read()
    # Third shim: the tiny vocabulary's <|endoftext|> is id 0.
    assert source.count("151643") >= 1
    source = source.replace('special_vocab.special_token_ids["eos"] = 151643',
                            'special_vocab.special_token_ids["eos"] = tokenizer.convert_tokens_to_ids("<|endoftext|>")')
    spec = importlib.util.spec_from_loader("bitnetcpp_convert", loader=None)
    conv = importlib.util.module_from_spec(spec)
    # First shim: I2_S as a plain integer type id.
    type.__setattr__(gguf.GGMLQuantizationType, "I2_S", I2_S)
    original = gguf.gguf_writer.quant_shape_from_byte_shape
    gguf.gguf_writer.quant_shape_from_byte_shape = lambda shape, t: shape if t == I2_S else original(shape, t)
    exec(compile(source, script, "exec"), conv.__dict__)
    # Second shim: the tiny Qwen3 tokenizer's pre-tokenizer.
    known = conv.get_vocab_base_pre
    conv.get_vocab_base_pre = lambda tokenizer, arch: "qwen2" if arch == "qwen3" else known(tokenizer, arch)
    for name in ["tiny-qwen3-embedding", "tiny-gemma3-embedding"]:
        out = os.path.join(MODELS, f"{name}-bitnetcpp-i2_s.gguf")
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, name)
            shutil.copytree(os.path.join(MODELS, name), src)
            with open(os.path.join(src, "config.json")) as f:
                config = json.load(f)
            rp = config["rope_parameters"]
            config["rope_theta"] = rp.get("full_attention", rp)["rope_theta"]
            with open(os.path.join(src, "config.json"), "w") as f:
                json.dump(config, f, indent=2)
            sys.argv = [script, src, "--outfile", out, "--outtype", "i2_s"]
            conv.main()
        print("wrote", out, os.path.getsize(out))


if __name__ == "__main__":
    main()
