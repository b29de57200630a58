# prophetkv for NVIDIA hosts (UNTESTED: no image with a GPU could be built and
# run where this file was written; the build recipe inside, scripts/cuda-build.sh,
# is the one proven on the project's H200).
#
#   docker build -f docker/cuda.Dockerfile -t prophetkv:cuda .
#   docker run --gpus all -p 8080:8080 -v $PWD/models:/models:ro prophetkv:cuda
#
# The build needs no GPU: CUDA 13.0 comes from pinned PyPI wheels (nvcc, cuBLAS,
# cuRAND, NVRTC, the runtime) and the driver library is a link-time stub; at run
# time the NVIDIA container toolkit (`--gpus`) brings the host's real libcuda
# (driver 580 or newer for CUDA 13.0). Kernels are built for CUDA_COMPUTE_CAP
# (90: H100/H200); the embedded PTX lets newer GPUs JIT them.

ARG RUST_VERSION=1.95
ARG CUDA_COMPUTE_CAP=90

FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG CUDA_COMPUTE_CAP
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip xz-utils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV CUDA_WHEELS_DIR=/opt/cuda-toolkit CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} CARGO_TARGET_DIR=/src/target/cuda
RUN PYTHON="python3" PIP_BREAK_SYSTEM_PACKAGES=1 scripts/cuda-build.sh build
# The CUDA libraries the binary links (not the driver): kept for the runtime stage.
RUN mkdir -p /opt/cuda-lib \
 && cp -a /opt/cuda-toolkit/nvidia/cu13/lib/lib*.so.* /opt/cuda-lib/

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 prophetkv \
 && useradd --system --uid 10001 --gid prophetkv --home-dir /data --shell /usr/sbin/nologin prophetkv \
 && mkdir -p /models /data /etc/prophetkv \
 && chown prophetkv:prophetkv /data
COPY --from=build /opt/cuda-lib/ /usr/local/lib/prophetkv-cuda/
COPY --from=build /src/target/cuda/prophetkv /usr/local/bin/prophetkv
COPY config/default.toml /etc/prophetkv/config.toml
ENV LD_LIBRARY_PATH=/usr/local/lib/prophetkv-cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PROPHETKV_CONFIG=/etc/prophetkv/config.toml \
    PROPHETKV_DEVICE=cuda \
    PROPHETKV_KV_DTYPE=bf16 \
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
