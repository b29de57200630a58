# prophetkv, the CPU image: `docker build -t prophetkv .`
#
# Two stages: the Rust build, then a slim Debian runtime with the binary, the
# default configuration and nothing else. The binary targets x86-64-v3
# (AVX2/FMA: every x86-64 server CPU since 2015), never the build machine's
# own CPU, so an image built anywhere runs anywhere of that baseline.
#
# Offline builds: with a `vendor/` directory in the context (`make
# docker-vendor` writes one with `cargo vendor`), crates come from it and the
# build stage uses no network. Without it, cargo fetches from crates.io.
#
# PREBUILT (a path inside the context, stripped) skips the compile and takes
# that binary: `make docker-test` packs the one `make test` built and tested
# (the same x86-64-v3 target), with BUILD_BASE=debian:bookworm-slim since no
# toolchain is needed. The build stage runs it once, so a binary that needs a
# newer glibc than Debian 12's fails the build, not the container.
#
# The base images are the public ones; where none can be pulled,
# scripts/docker-bases.sh makes them from Debian's packages under the same
# names. For NVIDIA hosts see docker/cuda.Dockerfile.

ARG RUST_VERSION=1.95
ARG TARGET_CPU=x86-64-v3
ARG PREBUILT=
ARG BUILD_BASE=rust:${RUST_VERSION}-slim-bookworm

FROM ${BUILD_BASE} AS build
ARG TARGET_CPU
ARG PREBUILT
# Lets `make docker-image` prune this stage's image after the build.
LABEL prophetkv.stage=build
WORKDIR /src
COPY . .
# The repository's .cargo/config.toml builds for the local CPU; an image must not.
ENV RUSTFLAGS="-C target-cpu=${TARGET_CPU}" CARGO_TERM_COLOR=never
RUN set -eu; \
    if [ -n "$PREBUILT" ]; then \
      install -D -m 0755 "$PREBUILT" target/release/prophetkv; \
      target/release/prophetkv --version; \
    else \
      offline=""; \
      if [ -d vendor ]; then \
        printf '[source.crates-io]\nreplace-with = "vendored"\n[source.vendored]\ndirectory = "vendor"\n' \
          >> .cargo/config.toml; \
        offline="--offline"; \
      fi; \
      cargo build --release --locked $offline -p prophetkv --bin prophetkv; \
      strip target/release/prophetkv; \
    fi

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 prophetkv \
 && useradd --system --uid 10001 --gid prophetkv --home-dir /data --shell /usr/sbin/nologin prophetkv \
 && mkdir -p /models /data /etc/prophetkv \
 && chown prophetkv:prophetkv /data
COPY --from=build /src/target/release/prophetkv /usr/local/bin/prophetkv
COPY config/default.toml /etc/prophetkv/config.toml
# Every key of the file can be overridden by its PROPHETKV_* variable (see
# `prophetkv serve --help`); these are the ones a container changes.
ENV PROPHETKV_CONFIG=/etc/prophetkv/config.toml \
    PROPHETKV_HOST=0.0.0.0 \
    PROPHETKV_PORT=8080 \
    PROPHETKV_MODEL=/models/gemma-3-270m-q4_k_m.gguf \
    PROPHETKV_DATA_DIR=/data \
    PROPHETKV_LOG_FORMAT=json
VOLUME ["/models", "/data"]
USER prophetkv
WORKDIR /data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD ["prophetkv", "health"]
ENTRYPOINT ["prophetkv"]
CMD ["serve"]
