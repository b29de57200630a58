"""Runs README.md's examples as written against a running `prophetkv serve`:
every `curl` command of its shell blocks, and its Python SDK snippet, with
`localhost:8080` / `127.0.0.1:8080` pointed at the server under test.

Usage: readme_examples.py --base-url http://127.0.0.1:PORT [--readme README.md]

Each curl must exit 0 and answer JSON without an `error` (or, streamed, SSE
events ending in `[DONE]`); an example that asks for the Aurora code must get
it (greedy ones only: a sampled answer may miss it). Exits non-zero on the first failure.
"""

import argparse
import json
import re
import subprocess
import sys


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def blocks(readme, language):
    return re.findall(rf"```{language}\n(.*?)```", readme, flags=re.S)


def curl_commands(block):
    """The curl commands of a shell block (a command runs to the next blank
    or comment line)."""
    commands, current = [], []
    for line in block.splitlines():
        if line.startswith("curl"):
            current = [line]
        elif current and line.strip() and not line.startswith("#"):
            current.append(line)
        else:
            if current:
                commands.append("\n".join(current))
            current = []
    if current:
        commands.append("\n".join(current))
    return commands


def pointed(text, host_port):
    return text.replace("localhost:8080", host_port).replace("127.0.0.1:8080", host_port)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--readme", default="README.md")
    args = parser.parse_args()
    host_port = args.base_url.removeprefix("http://")
    readme = open(args.readme, encoding="utf-8").read()

    # The examples for `make run`'s server (the Docker section's go to its
    # containers and are run by tests/docker_test.py's setup instead).
    commands = [c for b in blocks(readme, "sh") for c in curl_commands(b)
                if "localhost:8080" in c or "127.0.0.1:8080" in c]
    check(len(commands) >= 3, f"README has {len(commands)} curl examples")
    for command in commands:
        first = command.splitlines()[0][:70]
        run = subprocess.run(["bash", "-c", pointed(command, host_port)],
                             capture_output=True, text=True, timeout=600)
        check(run.returncode == 0, f"{first}: exit {run.returncode} {run.stderr[:200]}")
        out = run.stdout
        if "data: " in out:
            events = [l[6:] for l in out.splitlines() if l.startswith("data: ")]
            check(events[-1] == "[DONE]" and all("\"error\"" not in e for e in events),
                  f"{first}: {len(events)} SSE events ending in [DONE]")
            text = "".join(
                (json.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
                for e in events[:-1])
        else:
            body = json.loads(out)
            check("error" not in body, f"{first}: JSON without an error")
            choice = (body.get("choices") or [{}])[0]
            text = choice.get("text") or (choice.get("message") or {}).get("content") or ""
        # Only a greedy answer is checked for the code (a sampled one may miss it).
        if "Aurora" in command and "completions" in command and '"temperature": 0' in command:
            check("74547" in text, f"{first}: answers the Aurora code")

    for snippet in blocks(readme, "python"):
        run = subprocess.run([sys.executable, "-c", pointed(snippet, host_port)],
                             capture_output=True, text=True, timeout=600)
        check(run.returncode == 0, f"the Python snippet runs: {run.stderr[-300:]}")
        check("74547" in run.stdout, f"the Python snippet answers: {run.stdout[:120]!r}")
    print("all checks passed")


if __name__ == "__main__":
    main()
