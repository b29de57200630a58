"""Cost of constrained decoding on a running `prophetkv serve`: the same
chat request free and held to a JSON schema, alternated, with the server's
own timeline (first token, ms per token after it); the first constrained
request is timed apart (it would wait for the vocabulary if it were not
built yet).

Usage: scripts/bench-constrained.py http://127.0.0.1:8080
"""
import json, sys, time, urllib.request
base = sys.argv[1]
def chat(**kw):
    body = {"messages": [{"role": "user", "content": "List many animals, with their habitats."}], "temperature": 0, "frequency_penalty": 0.3, **kw}
    req = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    t = time.time()
    with urllib.request.urlopen(req) as r:
        d = json.loads(r.read())
    wall = time.time() - t
    tl = d["prophetkv"]["timeline"]; n = d["usage"]["completion_tokens"]
    per = (tl["finished_ms"] - tl["first_token_ms"]) / max(n - 1, 1)
    return wall, n, per, tl["first_token_ms"]
schema = {"type": "object", "properties": {"animals": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "habitat": {"type": "string"}}, "required": ["name", "habitat"]}}}, "required": ["animals"]}
rf = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
w, n, per, ft = chat(max_tokens=96, response_format=rf)
print(f"first constrained request (builds the vocabulary): wall {w*1000:.0f} ms, first token {ft:.0f} ms, {n} tokens, {per:.2f} ms/token")
for label, kw in [("free text", {}), ("json_schema", {"response_format": rf}), ("free text", {}), ("json_schema", {"response_format": rf})]:
    w, n, per, ft = chat(max_tokens=96, **kw)
    print(f"{label}: {n} tokens, first token {ft:.0f} ms, {per:.2f} ms/token after it")
