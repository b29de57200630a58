"""The official `openai` Python package against a running `prophetkv serve`.

Usage: openai_sdk.py --base-url http://127.0.0.1:PORT --tasks tasks/dev-niah.jsonl

Registers the documents of one needle task, then drives completions and chat,
streaming and not, with documents by id (and inline) through `extra_body`,
and checks the answers, the usage chunk and the `prophetkv` statistics.
Exits non-zero on the first failed check.
"""

import argparse
import json
import math
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

    sampling_parameters(client, model, question, by_id, reuse)
    explained(client, model, task, by_id, reuse)

    # Errors surface as the SDK's typed exceptions.
    try:
        client.completions.create(model=model, prompt="x", extra_body={"kv_reuse": {"recompute_ratio": 2}})
        check(False, "a ratio of 2 is refused")
    except openai.BadRequestError as e:
        check("recompute_ratio" in e.message, f"a ratio of 2 is refused: {e.message}")
    try:
        client.completions.create(model=model, prompt="x " * 40000, max_tokens=1)
        check(False, "a prompt beyond the context is refused")
    except openai.BadRequestError as e:
        check(e.code == "context_length_exceeded", f"a prompt beyond the context: {e.code}")
    for name, kwargs in [
        ("n", {"n": 2}),
        ("modalities", {"modalities": ["text", "audio"]}),
        ("frequency_penalty", {"frequency_penalty": 5}),
        ("top_logprobs", {"top_logprobs": 3}),
    ]:
        try:
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2, **kwargs)
            check(False, f"{name} is refused")
        except openai.BadRequestError as e:
            check(e.param == name, f"{name} is refused naming it: {e.message}")
    try:
        client.completions.create(model=model, prompt="x", extra_body={"documents": [{"id": "nope"}]})
        check(False, "an unknown document is refused")
    except openai.NotFoundError as e:
        check("nope" in e.message, f"an unknown document is refused: {e.message}")
    print("all checks passed")


def sampling_parameters(client, model, question, documents, reuse):
    """Log-probabilities, penalties, logit_bias and assistant prefill, each
    checked on the log-probabilities the server reports (the model's own,
    before sampling options), not on luck."""
    extra = {"documents": documents, "kv_reuse": reuse}
    messages = [{"role": "user", "content": question}]

    def ask(max_tokens=12, **kwargs):
        return client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, temperature=0,
            logprobs=True, top_logprobs=20, extra_body=extra, **kwargs)

    plain = ask()
    steps = plain.choices[0].logprobs.content
    check(len(steps) == plain.usage.completion_tokens,
          f"one log-probability per token ({len(steps)})")
    check(all(s.top_logprobs[0].logprob == s.logprob and s.logprob <= 0 for s in steps),
          "a greedy token is the most likely one")
    check(all(sum(math.exp(t.logprob) for t in s.top_logprobs) <= 1 + 1e-4 for s in steps),
          "the alternatives' probabilities sum to at most 1")
    spelled = "".join(s.token for s in steps)
    check(spelled.strip().startswith(plain.choices[0].message.content.strip()),
          f"the tokens spell the answer (and the stop after it): {spelled!r}")

    # Streamed: the same entries, spread over the chunks.
    chunks = list(client.chat.completions.create(
        model=model, messages=messages, max_tokens=12, temperature=0, logprobs=True,
        top_logprobs=20, stream=True, extra_body=extra))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs
                for t in c.choices[0].logprobs.content]
    check([t.token for t in streamed] == [t.token for t in steps], "streamed logprobs match")

    # Completions' shape.
    r = client.completions.create(model=model, prompt=question, max_tokens=4, temperature=0,
                                  logprobs=3, extra_body=extra)
    lp = r.choices[0].logprobs
    check(len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
          == r.usage.completion_tokens, "completions logprobs: parallel lists, one entry per token")

    # Penalties: each chosen token has the best penalised score among the
    # top 20 alternatives at its step.
    presence, frequency = 1.0, 1.5
    penalised = ask(max_tokens=16, presence_penalty=presence, frequency_penalty=frequency)
    counts = {}
    ok = True
    for s in penalised.choices[0].logprobs.content:
        def score(token, logprob):
            c = counts.get(token, 0)
            return logprob - c * frequency - (presence if c else 0)
        mine = score(s.token, s.logprob)
        ok &= all(mine >= score(t.token, t.logprob) - 1e-4 for t in s.top_logprobs)
        counts[s.token] = counts.get(s.token, 0) + 1
    check(ok, f"penalties choose by their definition ({penalised.choices[0].message.content!r})")

    # logit_bias: -100 on the first greedy token hands the step to the runner-up.
    first = steps[0]
    ids = tokenize(client.base_url, first.token)
    check(len(ids) == 1, f"/tokenize gives the id of {first.token!r}: {ids}")
    biased = ask(max_tokens=1, logit_bias={str(ids[0]): -100})
    check(biased.choices[0].logprobs.content[0].token == first.top_logprobs[1].token,
          f"logit_bias -100 on {first.token!r} gives the runner-up {first.top_logprobs[1].token!r}")

    # Assistant prefill: continuing the answer's first tokens gives the rest.
    head = "".join(t.token for t in steps[:3])
    continued = client.chat.completions.create(
        model=model, messages=messages + [{"role": "assistant", "content": head}],
        max_tokens=4, temperature=0, extra_body=extra)
    rest = "".join(t.token for t in steps[3:])
    check(rest.startswith(continued.choices[0].message.content),
          f"a prefilled assistant message is continued: {head!r} + "
          f"{continued.choices[0].message.content!r}")


def explained(client, model, task, documents, reuse):
    """The explain payload of a real request agrees with its statistics."""
    r = client.completions.create(
        model=model, prompt=task["question"], max_tokens=8, temperature=0,
        extra_body={"documents": documents, "kv_reuse": reuse, "prophetkv": {"explain": True}})
    stats = r.model_extra["prophetkv"]
    tokens = stats["explain"]["tokens"]
    check(len(tokens) == stats["context_tokens"],
          f"explain lists every context token once ({len(tokens)})")
    recomputed = sum(1 for t in tokens if t["segment"] == "document" and t["recomputed"] == "all_layers")
    check(recomputed == stats["selected_tokens"],
          f"explain's recomputed document tokens = the stats' ({recomputed})")
    scores = [t["score"] for t in tokens if "score" in t]
    check(len(scores) == stats["eligible_tokens"] and all(math.isfinite(x) for x in scores),
          f"every eligible token has a finite Stage I score ({len(scores)})")
    needle = next(a for a in task["answers"])
    marked = "".join(t["text"] for t in tokens if t["recomputed"] == "all_layers")
    check(needle[:3] in marked, f"the needle's digits are among the recomputed tokens")


def tokenize(base_url, text):
    """Token ids of `text` from the server's /tokenize (vLLM's route)."""
    root = str(base_url).rstrip("/").removesuffix("/v1")
    request = urllib.request.Request(
        f"{root}/tokenize", data=json.dumps({"prompt": text}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())["tokens"]


if __name__ == "__main__":
    main()
