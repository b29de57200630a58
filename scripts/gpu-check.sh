#!/usr/bin/env bash
# Runs on the GPU machine, beside what `scripts/cuda-build.sh pack` packed
# (target/cuda/pack: prophetkv.xz, torch_peer.py): the numerics checks
# against the CPU, the speed benchmarks and the PyTorch peer on the same GPU,
# each step under its own time limit so that one failure loses only itself.
#
#   scripts/gpu-check.sh [PACK_DIR] [RESULTS_DIR]
#
# RESULTS_DIR (default gpu-results, or $OUT when set) receives one JSON file
# per step and log.txt with every step's output and tables.
# STEPS (default: all) picks steps by name, e.g. STEPS="numerics-gemma ttft-gemma".
# All steps take about 15 minutes on an H200 (each numerics step ~9 s a prompt,
# NUMERICS_PROMPTS of them (20); the 8B TTFT ~50 s, the PyTorch peer ~45 s,
# the serving steps a few minutes): split them over two calls where one call
# may run 10 minutes. The first step, attention, checks the flash-attention
# kernel against f32; when it fails, the later steps run without it
# (PROPHETKV_FLASH_ATTENTION=0) and the log says so.
set -uo pipefail
cd "$(dirname "$0")/.."

PACK=${1:-target/cuda/pack}
RESULTS=${2:-${OUT:-gpu-results}}
STEPS=${STEPS:-attention ttft-gemma ttft-gemma-chunked decode-gemma ttft-llama8b decode-llama8b serve-gemma serve-llama8b numerics-gemma numerics-llama torch-peer}
mkdir -p "$RESULTS"
LOG=$RESULTS/log.txt
WORK=$(mktemp -d)
PY=${PYTHON:-python3}

unpack() {
  "$PY" -c "import lzma, shutil; shutil.copyfileobj(lzma.open('$PACK/$1.xz'), open('$WORK/$1', 'wb'))"
  chmod +x "$WORK/$1"
}
# BIN and SERVE_BENCH may name binaries already at hand (a CPU try-out of the script).
if [[ -z "${BIN:-}" ]]; then unpack prophetkv; BIN=$WORK/prophetkv; fi
if [[ -z "${SERVE_BENCH:-}" && -f "$PACK/serve_bench.xz" ]]; then
  unpack serve_bench
  SERVE_BENCH=$WORK/serve_bench
fi
DEVICE=${DEVICE:-cuda}
# cuBLAS, cuRAND and the CUDA runtime from the machine's PyTorch wheels; the
# driver's libcuda is on the system path.
NV_LIBS=$("$PY" - <<'EOF'
import glob, os, site
dirs = set()
for root in site.getsitepackages():
    for lib in glob.glob(os.path.join(root, "nvidia", "**", "lib*.so*"), recursive=True):
        if "/stubs/" not in lib:
            dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
EOF
)
export LD_LIBRARY_PATH=$NV_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  "$BIN" --version
} >>"$LOG" 2>&1

# step NAME SECONDS JSON_SOURCE COMMAND...: runs COMMAND, appends its output
# to the log and copies JSON_SOURCE (when written) to RESULTS/NAME.json.
step() {
  local name=$1 secs=$2 json=$3
  shift 3
  [[ " $STEPS " == *" $name "* ]] || return 0
  echo "== $name ($(date -u +%T)): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$secs" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
  [[ -f "$json" ]] && cp "$json" "$RESULTS/$name.${json##*.}"
  return 0
}

# serve_bench SHAPE: `prophetkv serve` with random weights of SHAPE on the
# device; SERVE_CLIENTS (32) streaming clients send SERVE_REQUESTS (64)
# requests of SERVE_CONTEXT (16,000) tokens in 8 registered documents, over a
# pool of 8 tasks' documents, prophetkv@0.2 then full; the table goes to
# WORK/serve-SHAPE.md. The device tier (SERVE_DEVICE_MB, 40 GiB) holds the
# pool (64 documents of 2k tokens: 17 GB in bf16 for the 8B shape); with the
# default 2 GiB tiers every 8B request read its documents from disk.
serve_bench() {
  local shape=$1 port=${SERVE_PORT:-18080} data=$WORK/data-$1
  "$BIN" tasks gen --kind multi-key --n 8 --context-tokens "${SERVE_CONTEXT:-16000}" --docs 8 \
    --random-weights "$shape" --out "$WORK/tasks-$shape.jsonl" || return 1
  "$BIN" serve --device "$DEVICE" --random-weights "$shape" --port "$port" --data-dir "$data" \
    --redis-url '' --max-batch 32 --max-queue 256 --device-budget-mb "${SERVE_DEVICE_MB:-40960}" \
    --host-budget-mb "${SERVE_HOST_MB:-16384}" 2>"$WORK/serve-$shape.log" &
  local pid=$!
  for _ in $(seq 600); do
    "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/ready')" \
      2>/dev/null && break
    sleep 0.5
  done
  "$SERVE_BENCH" --url "http://127.0.0.1:$port" --tasks "$WORK/tasks-$shape.jsonl" \
    --task-prefix multi-key --pool 8 --clients "${SERVE_CLIENTS:-32}" \
    --requests "${SERVE_REQUESTS:-64}" --strategies prophetkv:0.2,full --max-tokens 1 \
    | tee "$WORK/serve-$shape.md"
  local rc=${PIPESTATUS[0]}
  kill "$pid"
  wait "$pid"
  grep -E "ERROR|WARN" "$WORK/serve-$shape.log" | grep -v "RANDOM weights" | head -20
  tail -5 "$WORK/serve-$shape.log"
  return "$rc"
}
export -f serve_bench
export BIN SERVE_BENCH WORK PY DEVICE

G=(--random-weights gemma-3-270m --device "$DEVICE")
L=(--random-weights llama-3.1-8b --device "$DEVICE")
S=(--random-weights smollm2-135m --device "$DEVICE")
step attention 90 "$WORK/at/attention.json" "$BIN" bench attention --device "$DEVICE" \
  --dtype "${ATTENTION_DTYPE:-bf16}" --long "${ATTENTION_LONG:-16384}" --runs 5 --out "$WORK/at"
if [[ " $STEPS " == *" attention "* && ! -f "$WORK/at/attention.json" ]] \
  || grep -q '"holds": false' "$WORK/at/attention.json" 2>/dev/null; then
  echo "== flash attention failed its check: the remaining steps run without it" | tee -a "$LOG"
  export PROPHETKV_FLASH_ATTENTION=0
fi
# 31,000 asked gives ~31,900 tokens (the generator's headers), within Gemma's 32,768.
step ttft-gemma 60 "$WORK/tg/ttft.json" "$BIN" bench ttft "${G[@]}" --dtype bf16 \
  --context-tokens 4096,16384,31000 --docs 8 --ratio 0.2 \
  --strategies full,prophetkv,cacheblend,epic --runs 3 --out "$WORK/tg"
# The same at 16k on the chunked path (scores written out), for comparison.
step ttft-gemma-chunked 30 "$WORK/tc/ttft.json" env PROPHETKV_FLASH_ATTENTION=0 "$BIN" bench ttft \
  "${G[@]}" --dtype bf16 --context-tokens 16384 --docs 8 --ratio 0.2 \
  --strategies full,prophetkv,cacheblend,epic --runs 3 --out "$WORK/tc"
step decode-gemma 25 "$WORK/dg/decode.json" "$BIN" bench decode "${G[@]}" --dtype bf16 \
  --context-tokens 1024 --batch 1,32 --steps 32 --out "$WORK/dg"
# With Stage I's split (the probe's pass on the GPU / scoring on the host) in the log.
step ttft-llama8b 110 "$WORK/tl/ttft.json" env RUST_LOG=prophetkv_reuse=debug "$BIN" bench ttft \
  "${L[@]}" --dtype bf16 \
  --context-tokens 16384,31000 --docs 8 --ratio 0.2 \
  --strategies full,prophetkv,cacheblend,epic --runs 2 --out "$WORK/tl"
step decode-llama8b 30 "$WORK/dl/decode.json" "$BIN" bench decode "${L[@]}" --dtype bf16 \
  --context-tokens 1024 --batch 1,32 --steps 16 --out "$WORK/dl"
step serve-gemma 180 "$WORK/serve-gemma-3-270m.md" bash -c 'serve_bench gemma-3-270m'
step serve-llama8b 300 "$WORK/serve-llama-3.1-8b.md" bash -c 'serve_bench llama-3.1-8b'
NP=${NUMERICS_PROMPTS:-20}
step numerics-gemma 240 "$WORK/ng/numerics.json" "$BIN" bench numerics "${G[@]}" \
  --prompts "$NP" --context-tokens 512 --out "$WORK/ng"
step numerics-llama 240 "$WORK/nl/numerics.json" "$BIN" bench numerics "${S[@]}" \
  --prompts "$NP" --context-tokens 512 --out "$WORK/nl"
step torch-peer 240 "$WORK/torch_peer.json" env PYTHONUNBUFFERED=1 "$PY" "$PACK/torch_peer.py" "$WORK/torch_peer.json"
echo "results in $RESULTS" | tee -a "$LOG"
