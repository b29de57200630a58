"""The official `openai` Python package against a running `prophetkv serve`.

Usage: openai_sdk.py --base-url http://127.0.0.1:PORT --tasks tasks/dev-niah.jsonl

Registers the documents of one needle task, then drives completions and chat,
streaming and not, with documents by id (and inline) through `extra_body`,
and checks the answers, the usage chunk and the `prophetkv` statistics.
Exits non-zero on the first failed check.
"""

import argparse
import json
import sys
import urllib.request

import openai
from openai import OpenAI

TASK_ID = "code-s102-n8-t2000-3"
DOCS = 6  # the needle is in document 4


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def load_task(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            task = json.loads(line)
            if task["id"] == TASK_ID:
                task["documents"] = task["documents"][:DOCS]
                return task
    sys.exit(f"task {TASK_ID} not in {path}")


def register(base_url, documents):
    body = {"documents": [{"id": f"doc-{i}", "text": d} for i, d in enumerate(documents)]}
    request = urllib.request.Request(
        f"{base_url}/v1/documents",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        check(response.status == 201, "POST /v1/documents answers 201")
        return json.loads(response.read())["data"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--tasks", required=True)
    args = parser.parse_args()

    task = load_task(args.tasks)
    answer = task["answers"][0]
    registered = register(args.base_url, task["documents"])
    doc_tokens = sum(d["tokens"] for d in registered)
    by_id = [{"id": d["id"]} for d in registered]
    inline = [{"text": d} for d in task["documents"]]
    reuse = {"strategy": "prophetkv", "recompute_ratio": 0.2}

    client = OpenAI(base_url=f"{args.base_url}/v1", api_key="unused", timeout=600)
    model = client.models.list().data[0].id
    check(model == "gemma-3-270m", f"models.list serves {model}")
    check(client.models.retrieve(model).id == model, "models.retrieve finds it")

    # Completions, not streamed, documents by id.
    r = client.completions.create(
        model=model, prompt=task["question"], max_tokens=8, temperature=0,
        extra_body={"documents": by_id, "kv_reuse": reuse},
    )
    check(answer in r.choices[0].text, f"completion answers {r.choices[0].text!r}")
    stats = r.model_extra["prophetkv"]
    check(stats["strategy"] == "prophetkv", "stats name the strategy")
    check(
        stats["selected_tokens"] == int(0.2 * stats["eligible_tokens"]),
        f"{stats['selected_tokens']} of {stats['eligible_tokens']} eligible tokens recomputed",
    )
    check(
        stats["reused_tokens"] + stats["selected_tokens"] == doc_tokens,
        f"reused {stats['reused_tokens']} + recomputed {stats['selected_tokens']} = {doc_tokens} document tokens",
    )
    check(r.usage.prompt_tokens == stats["context_tokens"], "usage counts the whole context")

    # Completions, streamed, inline documents, with the usage chunk.
    chunks = list(client.completions.create(
        model=model, prompt=task["question"], max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
        extra_body={"documents": inline, "kv_reuse": reuse},
    ))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    check(answer in text, f"streamed completion answers {text!r}")
    check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1,
          "the last chunk carries usage")
    stats = next(c.model_extra["prophetkv"] for c in reversed(chunks) if c.model_extra.get("prophetkv"))
    check(stats["cache_hits"]["computed"] == 0,
          f"inline copies of registered text come from the cache ({stats['cache_hits']})")

    # Chat, not streamed.
    question = "What is the access code for the Aurora project?"
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=16,
        temperature=0, extra_body={"documents": by_id, "kv_reuse": reuse},
    )
    message = r.choices[0].message
    check(message.role == "assistant", "chat answers as the assistant")
    check(answer in message.content, f"chat answers {message.content!r}")
    check("User:" not in message.content, "the answer stops before the next turn")
    check(r.choices[0].finish_reason in ("stop", "length"), f"finish_reason {r.choices[0].finish_reason}")

    # Chat, streamed, with the usage chunk.
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=16,
        temperature=0, stream=True, stream_options={"include_usage": True},
        extra_body={"documents": by_id, "kv_reuse": reuse},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(answer in text, f"streamed chat answers {text!r}")
    check(chunks[0].choices[0].delta.role == "assistant", "the first delta carries the role")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    check(len(finishes) == 1, f"one finish_reason ({finishes})")
    usage = chunks[-1].usage
    check(usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
          "the last chunk carries usage")

    # Errors surface as the SDK's typed exceptions.
    try:
        client.completions.create(model=model, prompt="x", extra_body={"kv_reuse": {"recompute_ratio": 2}})
        check(False, "a ratio of 2 is refused")
    except openai.UnprocessableEntityError as e:
        check("recompute_ratio" in e.message, f"a ratio of 2 is refused: {e.message}")
    try:
        client.completions.create(model=model, prompt="x", extra_body={"documents": [{"id": "nope"}]})
        check(False, "an unknown document is refused")
    except openai.NotFoundError as e:
        check("nope" in e.message, f"an unknown document is refused: {e.message}")
    print("all checks passed")


if __name__ == "__main__":
    main()
