#!/usr/bin/env python3
"""The official `openai` Python client against a running `bitnet serve` (crates/server/tests/openai_client.rs
starts the server and runs this): models.list, chat.completions.create with and without stream=True,
completions.create, and an error case. Exits non-zero with a message on the first thing that is off.

    python3 tools/openai-client-check.py http://127.0.0.1:8080/v1 [API_KEY]
"""

import sys

import openai


def main():
    base = sys.argv[1]
    key = sys.argv[2] if len(sys.argv) > 2 else "unused"
    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)

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
