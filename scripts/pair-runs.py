#!/usr/bin/env python3
"""Pairs one arm of two `prophetkv eval` run directories task by task.

`prophetkv eval --against` pairs correct answers only; this adds agreement
with `full` (judged on the answer's first sentence, `full` taken from the
first run) and the reference answer's log-probability, on the tasks both
runs finished, overall and per group (task kind and context length).

The arm is ProphetKV's unless `--arm` names another strategy: with `--arm
full` it measures how far two runs of full prefill itself (say at two
precisions) agree, the floor under any agreement a reuse method can show.

    scripts/pair-runs.py docs/results/runs/gemma-preamble eval-out/gemma-longpre
    scripts/pair-runs.py --arm full docs/results/runs/gemma-preamble eval-out/noise/gemma-bf16
"""
import argparse
import json
from collections import defaultdict
from pathlib import Path

from pairing import mean_se, sign_test


def arms(run: Path, strategy: str):
    chosen, full = {}, {}
    for line in (run / "runs.jsonl").open():
        r = json.loads(line)
        if r["arm"]["strategy"] == strategy:
            chosen[r["id"]] = r
        if r["arm"]["strategy"] == "full":
            full[r["id"]] = r
    return chosen, full


def first_sentence(text: str) -> str:
    return text.strip().split("\n")[0].split(".")[0]


def group(task_id: str) -> str:
    """`multi-key-s1-n4-t1000-0` -> `multi-key 1k`."""
    kind = task_id.split("-s")[0]
    tokens = int(task_id.rsplit("-t", 1)[1].split("-")[0])
    return f"{kind} {tokens // 1000}k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arm", default="prophetkv", help="the strategy whose arms are paired")
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    a, full = arms(args.first, args.arm)
    b, _ = arms(args.second, args.arm)
    ids = [i for i in b if i in a and i in full]
    if len(ids) < 2:
        raise SystemExit("fewer than two tasks in common")
    agrees = {
        i: (first_sentence(a[i]["prediction"]) == first_sentence(full[i]["prediction"]),
            first_sentence(b[i]["prediction"]) == first_sentence(full[i]["prediction"]))
        for i in ids
    }
    diffs = [b[i]["gold_logprob"] - a[i]["gold_logprob"] for i in ids]
    mean, se = mean_se(diffs)
    correct_a = sum(a[i]["correct"] for i in ids)
    correct_b = sum(b[i]["correct"] for i in ids)
    print(f"arm: {args.arm}, tasks: {len(ids)}")
    cw = sum(b[i]["correct"] and not a[i]["correct"] for i in ids)
    cl = sum(a[i]["correct"] and not b[i]["correct"] for i in ids)
    print(f"correct: first {correct_a}, second {correct_b}"
          + (f" ({100 * correct_b / correct_a:.1f}% of the first)" if correct_a else "")
          + f"; second wins {cw}, loses {cl} (p = {sign_test(cw, cl):.3f})")
    aw = sum(y and not x for x, y in agrees.values())
    al = sum(x and not y for x, y in agrees.values())
    print(f"agrees with full: first {sum(x for x, _ in agrees.values())}, "
          f"second {sum(y for _, y in agrees.values())}; second wins {aw}, loses {al} "
          f"(p = {sign_test(aw, al):.3f})")
    print(f"second raises the reference answer's log-probability on {sum(d > 0 for d in diffs)}; "
          f"mean {mean:+.3f} ± {se:.3f}")
    groups = defaultdict(list)
    for i in ids:
        groups[group(i)].append(i)
    print()
    print("| tasks | n | first correct | second correct | first agrees with full | second agrees with full |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in sorted(groups, key=lambda g: (g.split()[0], int(g.split()[1][:-1]))):
        g = groups[name]
        n = len(g)
        pct = lambda k: f"{100 * k / n:.1f}%"
        print(f"| {name} | {n} | {pct(sum(a[i]['correct'] for i in g))} "
              f"| {pct(sum(b[i]['correct'] for i in g))} "
              f"| {pct(sum(agrees[i][0] for i in g))} | {pct(sum(agrees[i][1] for i in g))} |")


if __name__ == "__main__":
    main()
