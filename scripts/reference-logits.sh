#!/usr/bin/env bash
# Regenerates the reference outputs in crates/model/tests/data for a GGUF model
# (default: SmolLM2-135M-Instruct) from Hugging Face transformers and llama.cpp,
# in a venv of pinned versions under target/reference-venv (never committed).
# The outputs are committed; tests read them and need none of this.
#
#   scripts/reference-logits.sh [MODEL [STEM]]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
stem=${2:-smollm2-135m}
venv=$root/target/reference-venv

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -c 'import torch, transformers, gguf' 2>/dev/null ||
    "$venv/bin/pip" install -q torch==2.15.0 transformers==5.24.0 gguf==0.19.0 \
        tokenizers numpy accelerate
# llama-cpp-python builds its vendored llama.cpp from the sdist (a few minutes),
# for the CPU's baseline only: the reference must not depend on this machine.
"$venv/bin/python" -c 'import llama_cpp' 2>/dev/null ||
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
        "$venv/bin/pip" install -q llama-cpp-python==0.3.36

"$venv/bin/python" "$root/scripts/reference-logits.py" --model "$model" \
    --prompts "$root/crates/model/tests/data/reference-prompts.json" \
    --out-dir "$root/crates/model/tests/data" --stem "$stem"
