#!/usr/bin/env python3
"""The official `openai` Python client against a running `bitnet serve` (crates/server/tests/openai_client.rs
starts the server and runs this): models.list, chat.completions.create with and without stream=True,
completions.create, and an error case. Exits non-zero with a message on the first thing that is off.
With --embeddings REFERENCE.json (a server running an embedding fixture): embeddings.create, whose
vectors (sent base64, the client's default, and as floats) must match transformers' in the reference.

    python3 tools/openai-client-check.py http://127.0.0.1:8080/v1 [API_KEY] [--embeddings REFERENCE.json]
"""

import base64
import json
import math
import struct
import sys

import openai


def embeddings(client, reference_path):
    with open(reference_path) as f:
        reference = json.load(f)
    texts = [t["text"] for t in reference["texts"]]
    # Omitted: the client asks for base64 and decodes it; explicit base64 comes back as the string.
    for fmt in (None, "float", "base64"):
        args = {} if fmt is None else {"encoding_format": fmt}
        r = client.embeddings.create(model="any", input=texts, **args)
        assert len(r.data) == len(texts), r
        assert r.usage.prompt_tokens == sum(len(t["ids"]) for t in reference["texts"]), r.usage
        for d, t in zip(r.data, reference["texts"]):
            ours, theirs = d.embedding, t["embedding"]
            if fmt == "base64":
                raw = base64.b64decode(ours)
                ours = list(struct.unpack(f"<{len(raw) // 4}f", raw))
            cos = sum(a * b for a, b in zip(ours, theirs))
            assert len(ours) == len(theirs) and abs(math.fsum(a * a for a in ours) - 1) < 1e-4, len(ours)
            assert cos > 0.999, (fmt, cos, t["text"])
    try:
        client.embeddings.create(model="any", input="x", dimensions=8)
    except openai.BadRequestError as e:
        assert "dimensions" in str(e), e
    else:
        raise AssertionError("dimensions=8 was accepted")
    print(f"openai {openai.__version__}: embeddings (default, float and base64, {len(texts)} texts), errors: ok")


def main():
    base = sys.argv[1]
    key = sys.argv[2] if len(sys.argv) > 2 else "unused"
    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)
    if len(sys.argv) > 4 and sys.argv[3] == "--embeddings":
        embeddings(client, sys.argv[4])
        return

    models = client.models.list()
    ids = [m.id for m in models.data]
    assert len(ids) == 1, ids
    model = ids[0]

    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is Rust?"}]
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0, seed=1)
    text = whole.choices[0].message.content
    assert whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason in ("stop", "length"), whole.choices[0].finish_reason
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens > 0, whole.usage

    parts, finish, usage = [], None, None
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0, seed=1,
                                            stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                parts.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert "".join(parts) == text, ("".join(parts), text)
    assert finish == whole.choices[0].finish_reason, finish
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens, usage

    completion = client.completions.create(model=model, prompt="The capital of France is", max_tokens=4, temperature=0)
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 4, completion

    try:
        client.chat.completions.create(model=model, messages=messages, n=2)
    except openai.BadRequestError as e:
        assert "n = 1" in str(e), e
    else:
        raise AssertionError("n=2 was accepted")

    print(f"openai {openai.__version__}: models, chat (whole and streamed), completions, errors: ok")


if __name__ == "__main__":
    main()
