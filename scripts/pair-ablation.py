#!/usr/bin/env python3
"""Summarizes and pairs the variants of one or more `prophetkv ablate` runs.

An ablation split across processes (one `--out` each, over disjoint task
files) leaves one `trials.jsonl` per process; this reads them together and
prints, per variant, accuracy, agreement with `full` and the reference
answer's log-probability gap to `full` (mean ± standard error), then each
variant against BASE task by task (wins–losses with a two-sided sign test).

    scripts/pair-ablation.py default eval-out/smol-held/ablate-odd/trials.jsonl eval-out/smol-held/ablate-even/trials.jsonl
"""
import json
import sys

from pairing import mean_se, sign_test


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit("usage: pair-ablation.py BASE_VARIANT TRIALS.jsonl...")
    base, files = sys.argv[1], sys.argv[2:]
    tasks: dict = {}
    for path in files:
        for line in open(path):
            if line.strip():
                t = json.loads(line)
                tasks.setdefault(t["id"], {})[t["variant"]] = t
    variants = list(dict.fromkeys(v for by in tasks.values() for v in by))
    if base not in variants or "full" not in variants:
        sys.exit(f"the trials hold no {base!r} or no 'full' variant")
    print("| variant | tasks | accuracy | agrees with full | log-prob gap to full |")
    print("|---|---:|---:|---:|---:|")
    for v in variants:
        ids = [i for i, by in tasks.items() if v in by and "full" in by]
        gap = mean_se([tasks[i]["full"]["gold_logprob"] - tasks[i][v]["gold_logprob"] for i in ids])
        acc = sum(tasks[i][v]["correct"] for i in ids) / len(ids)
        agree = sum(tasks[i][v]["agrees_with_full"] for i in ids) / len(ids)
        print(f"| {v} | {len(ids)} | {acc:.1%} | {agree:.1%} | {gap[0]:.2f} ± {gap[1]:.2f} |")
    print()
    for v in variants:
        if v in ("full", base):
            continue
        ids = [i for i, by in tasks.items() if v in by and base in by]
        a, b = ([tasks[i][v] for i in ids], [tasks[i][base] for i in ids])
        cw = sum(x["correct"] and not y["correct"] for x, y in zip(a, b))
        cl = sum(y["correct"] and not x["correct"] for x, y in zip(a, b))
        aw = sum(x["agrees_with_full"] and not y["agrees_with_full"] for x, y in zip(a, b))
        al = sum(y["agrees_with_full"] and not x["agrees_with_full"] for x, y in zip(a, b))
        m, se = mean_se([x["gold_logprob"] - y["gold_logprob"] for x, y in zip(a, b)])
        print(f"{v} against {base} on {len(ids)} tasks: correct {cw}–{cl} (p = {sign_test(cw, cl):.3f}), "
              f"agrees {aw}–{al} (p = {sign_test(aw, al):.3f}), log-prob {m:+.3f} ± {se:.3f}")


if __name__ == "__main__":
    main()
