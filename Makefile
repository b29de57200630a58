# prophetkv: the two commands a new user needs are `make run` and `make test`.

MODEL ?= models/gemma-3-270m-q4_k_m.gguf
PROMPT ?= The capital of France is
CARGO ?= cargo

.PHONY: run test model build lint bench-runtime

## Fetch the default model if missing, build, and run a generation demo.
run: model build
	./target/release/prophetkv generate --model $(MODEL) --prompt "$(PROMPT)" --max-tokens 32

## Fetch the default model if missing and run the whole test suite.
test: model
	$(CARGO) fmt --all -- --check
	$(CARGO) test --release --workspace

## Download and verify the default model (idempotent).
model:
	scripts/fetch-model.sh

build:
	$(CARGO) build --release

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

## Prefill/decode throughput of both weight paths next to candle's stock Gemma 3 (docs/RESULTS.md).
bench-runtime: model
	$(CARGO) run --release -p prophetkv-model --example runtime_bench -- --model $(MODEL) --runs 3
