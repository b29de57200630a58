#!/usr/bin/env python3
"""Pairs the ProphetKV arms of two `prophetkv eval` run directories task by task.

`prophetkv eval --against` pairs correct answers only; this adds agreement
with `full` (judged on the answer's first sentence, `full` taken from the
first run) and the reference answer's log-probability, on the tasks both
runs finished.

    scripts/pair-runs.py docs/results/runs/gemma-preamble eval-out/gemma-longpre
"""
import json
import sys
from pathlib import Path

from pairing import mean_se


def arms(run: Path):
    prophet, full = {}, {}
    for line in (run / "runs.jsonl").open():
        r = json.loads(line)
        if r["arm"]["strategy"] == "prophetkv":
            prophet[r["id"]] = r
        elif r["arm"]["strategy"] == "full":
            full[r["id"]] = r
    return prophet, full


def first_sentence(text: str) -> str:
    return text.strip().split("\n")[0].split(".")[0]


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: pair-runs.py FIRST_RUN SECOND_RUN")
    a, full = arms(Path(sys.argv[1]))
    b, _ = arms(Path(sys.argv[2]))
    ids = [i for i in b if i in a and i in full]
    if len(ids) < 2:
        sys.exit("fewer than two tasks in common")
    agrees = {
        i: (first_sentence(a[i]["prediction"]) == first_sentence(full[i]["prediction"]),
            first_sentence(b[i]["prediction"]) == first_sentence(full[i]["prediction"]))
        for i in ids
    }
    diffs = [b[i]["gold_logprob"] - a[i]["gold_logprob"] for i in ids]
    mean, se = mean_se(diffs)
    print(f"tasks: {len(ids)}")
    print(f"correct: first {sum(a[i]['correct'] for i in ids)}, second {sum(b[i]['correct'] for i in ids)}")
    print(f"agrees with full: first {sum(x for x, _ in agrees.values())}, "
          f"second {sum(y for _, y in agrees.values())}; second wins "
          f"{sum(y and not x for x, y in agrees.values())}, loses {sum(x and not y for x, y in agrees.values())}")
    print(f"second raises the reference answer's log-probability on {sum(d > 0 for d in diffs)}; "
          f"mean {mean:+.3f} ± {se:.3f}")


if __name__ == "__main__":
    main()
