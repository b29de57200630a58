"""Fuzzes a running prophetkv server's whole API from its /openapi.json with schemathesis.

Usage: schemathesis_check.py BASE_URL [--api-key KEY] [--max-examples N] [--seed S]
                              [--show-refusals N]

Every operation of the document gets the examples, coverage and fuzzing phases (positive and
negative data), at most N generated cases per operation in the fuzzing phase, generated
deterministically (the same cases every run) or, with --seed, from that seed. Each response is
checked: no 5xx, and a status, content type, headers and body that the document declares
(a stream event by event). Generated `max_tokens` are capped (a before_call hook) so that
a generation request stays cheap; start the server with a small `--chat-max-tokens` for chat
requests that set none. Schemathesis' and Hypothesis' files go to a temporary directory.

Prints the statuses each operation answered, "generated requests: N" and "failures: M", and
exits non-zero on any failure.
"""

import argparse
import collections
import os
import sys
import tempfile
import threading

import click
import schemathesis
from schemathesis.cli import handler
from schemathesis.cli import schemathesis as cli
from schemathesis.cli.commands.run.handlers.base import EventHandler
from schemathesis.engine import Status, events

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]

# The largest `max_tokens` a generated request keeps: enough to decode a few tokens and end on
# `length`, small enough that a thousand requests take seconds of model time.
MAX_TOKENS_CAP = 4

_lock = threading.Lock()
_requests = 0
_statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
_failed_cases = 0
# With --show-refusals: each operation's 4xx messages and how often each came.
_refusals: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
_show_refusals = False


@schemathesis.hook
def before_call(context, case, kwargs):
    """Caps the token budget of generation requests (other bodies pass unchanged)."""
    body = case.body
    if isinstance(body, dict):
        for field in ("max_tokens", "max_completion_tokens"):
            value = body.get(field)
            if isinstance(value, int) and not isinstance(value, bool) and value > MAX_TOKENS_CAP:
                body[field] = MAX_TOKENS_CAP


@schemathesis.hook
def after_call(context, case, response):
    """Counts the requests sent and the statuses of each operation."""
    global _requests
    with _lock:
        _requests += 1
        _statuses[case.operation.label][response.status_code] += 1
    if _show_refusals and 400 <= response.status_code < 500:
        try:
            message = response.json()["error"]["message"]
        except Exception:  # not our error shape: show the raw text
            message = response.text
        with _lock:
            _refusals[case.operation.label][f"{response.status_code} {message[:160]}"] += 1


@handler()
class FailureCounter(EventHandler):
    """Counts the test cases that failed a check or errored."""

    def handle_event(self, ctx, event) -> None:
        global _failed_cases
        if not isinstance(event, events.ScenarioFinished):
            return
        for checks in event.recorder.checks.values():
            if any(c.status in (Status.FAILURE, Status.ERROR) for c in checks):
                with _lock:
                    _failed_cases += 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("--api-key")
    parser.add_argument("--max-examples", type=int, default=60)
    parser.add_argument("--seed", type=int, help="explore with this seed (default: deterministic)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--show-refusals", type=int, default=0, metavar="N",
                        help="print each operation's N most frequent 4xx messages")
    args = parser.parse_args()
    global _show_refusals
    _show_refusals = args.show_refusals > 0
    base = args.base_url.rstrip("/")
    argv = [
        "run",
        f"{base}/openapi.json",
        "--url",
        base,
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(args.max_examples),
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        str(args.workers),
        "--request-timeout",
        "60",
        "--continue-on-failure",
        "--no-color",
    ]
    # The same cases every run; another seed explores others, reproducibly.
    argv += ["--seed", str(args.seed)] if args.seed is not None else ["--generation-deterministic"]
    if args.api_key:
        argv += ["--header", f"Authorization: Bearer {args.api_key}"]
    home = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="schemathesis-") as scratch:
        os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = os.path.join(scratch, "hypothesis")
        os.chdir(scratch)
        try:
            cli.main(argv, prog_name="schemathesis", standalone_mode=False)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except click.ClickException as e:
            e.show()
            code = e.exit_code
        finally:
            os.chdir(home)
    print("statuses by operation:")
    for label, counts in sorted(_statuses.items()):
        print(f"  {label}: " + ", ".join(f"{s} x{n}" for s, n in sorted(counts.items())))
    for label, messages in sorted(_refusals.items()):
        print(f"  {label} refusals:")
        for message, n in messages.most_common(args.show_refusals):
            print(f"    {n:4} {message}")
    print(f"generated requests: {_requests}")
    print(f"failures: {_failed_cases}")
    if _requests == 0:
        print("no request was sent")
        return 1
    return 1 if code != 0 or _failed_cases else 0


if __name__ == "__main__":
    sys.exit(main())
