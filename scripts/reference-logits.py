#!/usr/bin/env python3
"""Reference outputs of a GGUF model from two independent implementations.

Writes, for the prompts of crates/model/tests/data/reference-prompts.json and the
strings of its "tokenizer" list:

- <stem>-hf-logits.json: Hugging Face transformers (the GGUF dequantized to fp32,
  PyTorch on the CPU, sdpa attention) and its tokenizer converted from the GGUF;
- <stem>-llamacpp-logits.json: llama.cpp through llama-cpp-python (quantized kernels).

Each prompt's record: token ids (BOS included where the model adds one), the top-20
ids and raw logits at the last prompt position, and the greedy 16-token continuation.
The tokenizer records: each string's ids without special tokens.

`scripts/reference-logits.sh` runs this in its own venv with pinned versions; the
files are committed, so tests need none of it.
"""

import argparse
import hashlib
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

TOPK = 20
GREEDY_TOKENS = 16


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions(*packages: str) -> dict:
    out = {"python": platform.python_version()}
    for p in packages:
        out[p] = metadata.version(p)
    return out


def record(name, text, ids, logits, greedy_ids, greedy_text, token_text):
    """One prompt's record from its last-position logits (a list of floats)."""
    order = sorted(range(len(logits)), key=lambda i: -logits[i])[:TOPK]
    return {
        "name": name,
        "text": text,
        "n_tokens": len(ids),
        "token_ids": ids,
        "top_ids": order,
        "top_logits": [float(logits[i]) for i in order],
        "top_tokens": [token_text(i) for i in order],
        "greedy_ids": greedy_ids,
        "greedy_text": greedy_text,
        "greedy_top1_top2_margin": float(logits[order[0]] - logits[order[1]]),
    }


def run_hf(model_path: Path, prompts, strings):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    folder, name = str(model_path.parent), model_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, attn_implementation="sdpa"
    )
    model.eval()
    results = []
    with torch.no_grad():
        for p in prompts:
            ids = tok(p["text"]).input_ids
            x = torch.tensor([ids])
            logits = model(x).logits[0, -1].tolist()
            out = model.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=GREEDY_TOKENS,
                do_sample=False,
                pad_token_id=tok.eos_token_id,
            )[0, len(ids):].tolist()
            results.append(
                record(
                    p["name"], p["text"], ids, logits, out, tok.decode(out),
                    lambda i: tok.convert_ids_to_tokens(i),
                )
            )
    tokenized = [
        {"text": s, "ids": tok(s, add_special_tokens=False).input_ids} for s in strings
    ]
    return {
        "reference": "transformers GGUF dequantization -> fp32 PyTorch CPU, attn=sdpa",
        "versions": versions("torch", "transformers", "gguf", "tokenizers", "numpy"),
        "bos_added": bool(tok.bos_token_id is not None
                          and results[0]["token_ids"][:1] == [tok.bos_token_id]),
        "results": results,
        "tokenizer": tokenized,
    }


def run_llamacpp(model_path: Path, prompts, strings):
    from llama_cpp import Llama

    n_ctx = max(1024, 2 * max(len(p["text"]) for p in prompts))
    llm = Llama(
        model_path=str(model_path), n_ctx=n_ctx, logits_all=True, verbose=False,
        n_threads=2, seed=0,
    )
    results = []
    for p in prompts:
        ids = llm.tokenize(p["text"].encode(), add_bos=True, special=False)
        llm.reset()
        llm.eval(ids)
        logits = list(llm.scores[llm.n_tokens - 1])
        greedy = []
        for _ in range(GREEDY_TOKENS):
            last = list(llm.scores[llm.n_tokens - 1])
            nxt = max(range(len(last)), key=lambda i: last[i])
            greedy.append(nxt)
            if nxt == llm.token_eos():
                break
            llm.eval([nxt])
        text = llm.detokenize(greedy).decode("utf-8", "replace")
        results.append(
            record(
                p["name"], p["text"], ids, logits, greedy, text,
                lambda i: llm.detokenize([i]).decode("utf-8", "replace"),
            )
        )
    tokenized = [
        {"text": s, "ids": llm.tokenize(s.encode(), add_bos=False, special=False)}
        for s in strings
    ]
    return {
        "reference": "llama.cpp (llama-cpp-python), quantized CPU kernels",
        "versions": versions("llama_cpp_python"),
        "bos_added": results[0]["token_ids"][:1] == [llm.token_bos()],
        "results": results,
        "tokenizer": tokenized,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--prompts", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--stem", required=True, help="e.g. smollm2-135m")
    parser.add_argument("--only", choices=["hf", "llamacpp"])
    args = parser.parse_args()

    spec = json.loads(args.prompts.read_text())
    header = {"model": args.model.name, "sha256": sha256(args.model), "topk": TOPK}
    runs = {"hf": run_hf, "llamacpp": run_llamacpp}
    for which, fn in runs.items():
        if args.only and args.only != which:
            continue
        out = {**header, **fn(args.model, spec["prompts"], spec["tokenizer"])}
        path = args.out_dir / f"{args.stem}-{which}-logits.json"
        path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
        tops = [(r["name"], r["top_ids"][0], r["greedy_text"]) for r in out["results"]]
        print(f"{path}: {tops}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
