# prophetkv: the two commands a new user needs are `make run` and `make test`.

MODEL ?= models/gemma-3-270m-q4_k_m.gguf
PROMPT ?= The capital of France is
CARGO ?= cargo

.PHONY: run demo test model deps venv build lint fuzz fuzz-smoke reference docker-bases docker-vendor docker-image docker-image-tested docker-test cuda-check cuda bench-runtime bench-store bench-serve soak soak-real eval-tasks eval bench-ttft ablate

## Fetch the default model if missing, build, and start the server on 127.0.0.1:8080.
run: model build
	./target/release/prophetkv serve --config config/default.toml --model $(MODEL)

## One greedy generation from the command line.
demo: model build
	./target/release/prophetkv generate --model $(MODEL) --prompt "$(PROMPT)" --max-tokens 32

## Fetch the default model, install redis-server and the openai package if missing, run every test.
test: model deps venv
	$(CARGO) fmt --all -- --check
	$(CARGO) test --release --workspace

## Download and verify the default model and the instruction-tuned SmolLM2 (idempotent).
model:
	scripts/fetch-model.sh
	scripts/fetch-smollm2.sh

## Test dependencies: redis-server (the store's tests start their own servers), chromium
## and chromium-driver (the web page's test).
deps:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing chromium and chromium-driver (tests/ui_check.py drives the web page)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
	@command -v redis-server >/dev/null && command -v chromium >/dev/null && command -v chromedriver >/dev/null

## Python venv with the official openai package (tests/openai_sdk.py drives the server with it)
## openapi-spec-validator (tests/openapi_check.py checks /openapi.json with it),
## kubernetes-validate (tests/k8s_check.py checks deploy/k8s offline with it), jsonschema
## (tests/structured_output.py validates answers with it), langchain-openai
## (tests/langchain_client.py), selenium (tests/ui_check.py) and schemathesis, pinned
## (tests/schemathesis_check.py fuzzes the API from /openapi.json with it).
venv:
	@test -x .venv/bin/pip || python3 -m venv .venv || { rm -rf .venv; \
	  echo "installing python3-venv"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
	  python3 -m venv .venv; }
	@.venv/bin/python -c 'import openai' 2>/dev/null || .venv/bin/pip install -q openai
	@.venv/bin/python -c 'import openapi_spec_validator' 2>/dev/null || .venv/bin/pip install -q openapi-spec-validator
	@.venv/bin/python -c 'import kubernetes_validate' 2>/dev/null || .venv/bin/pip install -q kubernetes-validate
	@.venv/bin/python -c 'import jsonschema' 2>/dev/null || .venv/bin/pip install -q jsonschema
	@.venv/bin/python -c 'import langchain_openai' 2>/dev/null || .venv/bin/pip install -q langchain-openai
	@.venv/bin/python -c 'import selenium' 2>/dev/null || .venv/bin/pip install -q selenium
	@.venv/bin/python -c 'import schemathesis, sys; sys.exit(schemathesis.__version__ != "4.32.5")' 2>/dev/null || .venv/bin/pip install -q schemathesis==4.32.5

build:
	$(CARGO) build --release

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

FUZZ_TARGETS := gguf hf_model kv_blob request chat_template tokenizer
FUZZ_SECS ?= 1800
# cargo-fuzz's build options (default: release with AddressSanitizer).
FUZZ_BUILD ?=

## Every fuzz target in fuzz/ for FUZZ_SECS seconds each (libFuzzer via cargo-fuzz, installed
## when missing), starting from the seed corpora the test suite writes (crates/cli/tests/
## fuzz_seeds.rs) and what earlier runs found (target/fuzz-corpus). A crash stops it and is
## kept in fuzz/artifacts/<target>/. libFuzzer's instrumentation flags are nightly-only;
## stable rustc takes them with RUSTC_BOOTSTRAP=1. The seeds' test runs with `--workspace`, the
## features `make test` built with, so that nothing is compiled again for it.
fuzz: model
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked --version 0.13.2
	PROPHETKV_FUZZ_SEEDS=$(CURDIR)/target/fuzz-seeds $(CARGO) test --release --workspace --test fuzz_seeds
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/fuzz-corpus/$$t target/fuzz-seeds/$$t && \
	  echo "fuzzing $$t for $(FUZZ_SECS) s" && \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $(FUZZ_BUILD) $$t target/fuzz-corpus/$$t target/fuzz-seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECS) -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 || exit 1; \
	done

## Each fuzz target for 30 s (CI): a debug build (overflow checks and debug assertions on) without
## AddressSanitizer, which builds in about a quarter of the time; `make fuzz` hunts with both.
fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECS=30 FUZZ_BUILD="--dev --sanitizer none"

## Regenerate SmolLM2's reference outputs (HF transformers, llama.cpp) in crates/model/tests/data
## (pinned versions in their own venv; the files are committed, tests need none of this).
reference: model
	scripts/reference-logits.sh

## Prefill/decode throughput of our weight paths next to llama.cpp's llama-bench (built from
## source into target/llama.cpp by scripts/llama-bench.sh), same file, same threads (docs/RESULTS.md).
bench-runtime: model
	@llama=$$(scripts/llama-bench.sh) && \
	$(CARGO) run --release -p prophetkv-model --example runtime_bench -- --model $(MODEL) --runs 3 \
	    --rounds 3 --llama-bench $$llama --threads $$(nproc)

## Load time per tier vs computing, bytes per token (docs/RESULTS.md); starts a throwaway Redis.
bench-store: model deps
	@port=$$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'); \
	redis-server --port $$port --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null; \
	$(CARGO) run --release -p prophetkv-store --example tier_bench -- --model $(MODEL) --redis-url redis://127.0.0.1:$$port/; \
	status=$$?; redis-cli -p $$port shutdown nosave >/dev/null 2>&1; exit $$status

## 8 concurrent clients streaming 2k-token RAG requests, prophetkv@0.2 vs full (docs/RESULTS.md).
bench-serve: model build
	@port=$$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'); \
	data=$$(mktemp -d); \
	./target/release/prophetkv serve --model $(MODEL) --port $$port --data-dir $$data --redis-url '' --log-format json 2>$$data/serve.log & \
	pid=$$!; \
	until curl -sf localhost:$$port/ready >/dev/null; do sleep 0.5; done; \
	$(CARGO) run --release -p prophetkv --example serve_bench -- --url http://127.0.0.1:$$port; \
	status=$$?; kill $$pid; wait $$pid; rm -rf $$data; exit $$status

## 64 concurrent streaming clients for 10 minutes on a tiny random model, the server's RSS read
## every second: no errors, greedy answers equal to their references, peak RSS within the host
## tier's budget plus a stated constant, no leak trend, TTFT p99 stable (docs/results/soak.md;
## SOAK_SECS and SOAK_CLIENTS override the length and the clients).
soak:
	$(CARGO) test --release -p prophetkv --test soak -- --ignored --nocapture sixty_four_streaming_clients

## The same soak on the default model, 8 clients for 5 minutes (docs/results/soak_real.md).
soak-real: model
	$(CARGO) test --release -p prophetkv --test soak -- --ignored --nocapture on_the_default_model

EVAL_DIR ?= eval-out
EVAL_N ?= 50
## Context sizes of the task set, each TOKENS:DOCUMENTS:SEED.
EVAL_SIZES ?= 1000:4:1 2000:8:2 4000:8:3
## Distractor facts per task (empty: one in every document); SmolLM2 takes 2.
EVAL_DISTRACTORS ?=
## Where `make eval` copies its tables and plots (docs/results/smollm2 for the second model).
EVAL_RESULTS ?= docs/results
PROPHETKV = ./target/release/prophetkv

## The evaluation task set, measured in MODEL's tokens: 3 kinds x EVAL_SIZES, EVAL_N each,
## interleaved so that any prefix of the file covers every group.
eval-tasks: model build
	@mkdir -p $(EVAL_DIR)/tasks
	@files=; for size in $(EVAL_SIZES); do \
	  tokens=$${size%%:*}; rest=$${size#*:}; docs=$${rest%%:*}; seed=$${rest#*:}; \
	  for kind in multi-key multi-value rag; do \
	    out=$(EVAL_DIR)/tasks/$$kind-$$((tokens / 1000))k.jsonl; files="$$files $$out"; \
	    $(PROPHETKV) tasks gen --model $(MODEL) --kind $$kind --n $(EVAL_N) --context-tokens $$tokens \
	      --docs $$docs --seed $$seed $(if $(EVAL_DISTRACTORS),--distractors $(EVAL_DISTRACTORS)) \
	      --out $$out || exit 1; \
	  done; \
	done; \
	paste -d '\n' $$files | grep -v '^$$' > $(EVAL_DIR)/tasks/all.jsonl

## Accuracy of every strategy at ratios 0.1/0.2/0.3 on the task set (resumable: rerun to continue),
## then the TTFT benchmark; tables and plots are copied to EVAL_RESULTS (see docs/RESULTS.md).
eval: eval-tasks
	$(PROPHETKV) eval --model $(MODEL) --tasks $(EVAL_DIR)/tasks/all.jsonl --ratios 0.1,0.2,0.3 --out $(EVAL_DIR)/accuracy
	@mkdir -p $(EVAL_RESULTS)
	cp $(EVAL_DIR)/accuracy/results.md $(EVAL_RESULTS)/accuracy.md
	cp $(EVAL_DIR)/accuracy/accuracy_vs_ratio*.png $(EVAL_DIR)/accuracy/frontier_*.png $(EVAL_RESULTS)/
	$(MAKE) bench-ttft

## TTFT of the strategies side by side at 1k/2k/4k tokens (EVAL_RESULTS/ttft.md, ttft_vs_context.png).
bench-ttft: model build
	$(PROPHETKV) bench ttft --model $(MODEL) --context-tokens 1024,2048,4096 --docs 8 --ratio 0.2 --runs 5 --out $(EVAL_DIR)/ttft
	@mkdir -p $(EVAL_RESULTS)
	cp $(EVAL_DIR)/ttft/ttft.md $(EVAL_DIR)/ttft/ttft_vs_context.png $(EVAL_RESULTS)/

## Ablations of ProphetKV's options at ratio 0.2 on held-out tasks (other seeds than `make eval`),
## every variant against full prefill on the same tasks: accuracy over 56 tasks, then the paired
## log-probability of the reference answer over 16, and the same 16 with documents cached after BOS
## alone (docs/results/ablation-*.md, ~85 minutes here).
ABLATE_DIR ?= ablate-out
ABLATE_2K = $(ABLATE_DIR)/tasks/multi-key-2k.jsonl,$(ABLATE_DIR)/tasks/rag-2k.jsonl
ablate: model build
	@mkdir -p $(ABLATE_DIR)/tasks
	@for kind in multi-key rag; do \
	  $(PROPHETKV) tasks gen --model $(MODEL) --kind $$kind --n 16 --context-tokens 2000 --docs 8 --seed 12 --out $(ABLATE_DIR)/tasks/$$kind-2k.jsonl && \
	  $(PROPHETKV) tasks gen --model $(MODEL) --kind $$kind --n 12 --context-tokens 1000 --docs 4 --seed 11 --out $(ABLATE_DIR)/tasks/$$kind-1k.jsonl || exit 1; \
	done
	$(PROPHETKV) ablate --model $(MODEL) --out $(ABLATE_DIR)/accuracy \
	  --tasks $(ABLATE_2K),$(ABLATE_DIR)/tasks/multi-key-1k.jsonl,$(ABLATE_DIR)/tasks/rag-1k.jsonl \
	  --variant "paper=--fusion mean --spread 0" \
	  --variant "global=--fusion mean --spread 0 --score-layers 5,11,17" \
	  --variant "visible=--fusion visible --spread 0" \
	  --variant "max=--fusion max --spread 0" \
	  --variant "isolated=--fusion mean --spread 0 --probe isolated" \
	  --variant "block16=--fusion mean --spread 0 --block 16" \
	  --variant "spread4=--fusion mean --spread 4" \
	  --variant "visible+spread4=--fusion visible --spread 4" \
	  --variant "naive=--strategy naive"
	$(PROPHETKV) ablate --model $(MODEL) --out $(ABLATE_DIR)/logprob --n 8 --tasks $(ABLATE_2K) \
	  --variant "paper=--fusion mean --spread 0" \
	  --variant "global=--fusion mean --spread 0 --score-layers 5,11,17" \
	  --variant "visible=--fusion visible --spread 0" \
	  --variant "visible+spread4=--fusion visible --spread 4" \
	  --variant "global+spread4=--fusion mean --spread 4 --score-layers 5,11,17" \
	  --variant "random=--strategy random" \
	  --variant "cacheblend=--strategy cacheblend" \
	  --variant "visible+spread4@0.5=--fusion visible --spread 4 --ratio 0.5" \
	  --variant "paper@0.5=--fusion mean --spread 0 --ratio 0.5" \
	  --variant "naive=--strategy naive"
	$(PROPHETKV) ablate --model $(MODEL) --out $(ABLATE_DIR)/anchor --n 8 --tasks $(ABLATE_2K) --bos-anchor \
	  --variant "default=--fusion visible --spread 4" \
	  --variant "naive=--strategy naive"
	@mkdir -p docs/results
	cp $(ABLATE_DIR)/accuracy/ablation.md docs/results/ablation-accuracy.md
	cp $(ABLATE_DIR)/logprob/ablation.md docs/results/ablation-logprob.md
	cp $(ABLATE_DIR)/anchor/ablation.md docs/results/ablation-anchor.md

RUST_VERSION = $(shell rustc --version | awk '{split($$2, v, "."); print v[1] "." v[2]}')

## The base images the Dockerfile and deploy/compose.yaml name, made from Debian's packages
## (no registry needed; idempotent).
docker-bases:
	scripts/docker-bases.sh

## Vendored crates, so that the image's build stage needs no network.
docker-vendor:
	$(CARGO) vendor --locked --versioned-dirs vendor >/dev/null

## The CPU image, prophetkv:latest, compiled from source in its build stage.
docker-image: docker-bases docker-vendor
	docker build -t prophetkv:latest --build-arg RUST_VERSION=$(RUST_VERSION) .
	docker image prune -f --filter label=prophetkv.stage=build >/dev/null

## The same image around the binary `make test` built and tested (x86-64-v3 like the build
## stage's; `cargo test --no-run` rebuilds it only when a source changed since), without a
## second compile of the workspace.
docker-image-tested:
	BASES=runtime scripts/docker-bases.sh
	$(CARGO) test --release --workspace --no-run
	mkdir -p docker/prebuilt && strip -o docker/prebuilt/prophetkv target/release/prophetkv
	docker build -t prophetkv:latest --build-arg BUILD_BASE=debian:bookworm-slim \
	  --build-arg PREBUILT=docker/prebuilt/prophetkv . ; rc=$$?; rm -rf docker/prebuilt; exit $$rc
	docker image prune -f --filter label=prophetkv.stage=build >/dev/null

## The tested binary's image and deploy/compose.yaml in real containers (tests/docker_test.py);
## writes docker-report.json.
docker-test: model venv docker-image-tested
	.venv/bin/python tests/docker_test.py --image prophetkv:latest --models models --report docker-report.json

## Compiles the `cuda` feature without a GPU (CUDA 13.0 from pinned PyPI wheels, a stub libcuda)
## and runs the model crate's unit tests with it (NVRTC compiles our kernels; no GPU needed).
cuda-check:
	scripts/cuda-build.sh check

## The CUDA binary for the GPU machine, built here without a GPU (portable x86-64-v3 CPU code),
## packed with the PyTorch peer in target/cuda/pack/ (~10 MB); there, `scripts/gpu-check.sh
## target/cuda/pack` runs the numerics checks and the benchmarks into gpu-results/.
cuda:
	scripts/cuda-build.sh pack
