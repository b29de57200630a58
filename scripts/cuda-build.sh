#!/usr/bin/env bash
# Builds the `cuda` feature of prophetkv on a machine without a GPU or a CUDA
# install, with CUDA 13.0 from pinned PyPI wheels (nvcc 13.0.x: 13.1+ writes
# PTX a 13.0 driver refuses) and a stub libcuda.so.1 to link against (the
# real one comes with the driver on the GPU machine).
#
#   scripts/cuda-build.sh check    # cargo check --features cuda, then the model
#                                  # crate's unit tests with it: NVRTC compiles our
#                                  # kernels' source without a GPU (what CI runs)
#   scripts/cuda-build.sh build    # the release binary for x86-64-v3, packed as
#                                  # target/cuda/prophetkv.xz for the GPU machine
#   scripts/cuda-build.sh pack     # build, then target/cuda/pack/: the binary, the
#                                  # HTTP load client and the PyTorch peer
#                                  # (TORCH_PEER, default ../shared/gpu/torch_peer.py),
#                                  # all that scripts/gpu-check.sh needs (~13 MB)
#
# CUDA_COMPUTE_CAP (default 90: H100/H200) picks the kernels' architecture.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-check}
ROOT=${CUDA_WHEELS_DIR:-$PWD/target/cuda-toolkit}
PY=${PYTHON:-python3}
WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
        nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96
        nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88)

if [[ ! -x "$ROOT/nvidia/cu13/bin/nvcc" ]]; then
  echo "installing CUDA 13.0 wheels into $ROOT"
  "$PY" -m pip install -q --no-deps --target "$ROOT" "${WHEELS[@]}"
fi
CUDA=$ROOT/nvidia/cu13
# The linker looks for unversioned names; the wheels ship sonames only.
for lib in cublas cublasLt curand nvrtc cudart; do
  so=$(ls "$CUDA"/lib/lib$lib.so.* 2>/dev/null | head -1 || true)
  [[ -n "$so" && ! -e "$CUDA/lib/lib$lib.so" ]] && ln -s "$(basename "$so")" "$CUDA/lib/lib$lib.so"
done
mkdir -p "$CUDA/lib/stubs"
if [[ ! -e "$CUDA/lib/stubs/libcuda.so" ]]; then
  echo "making a stub libcuda.so.1 ($(wc -l < scripts/libcuda.syms) driver symbols)"
  sed 's/.*/void &(void) {}/' scripts/libcuda.syms > "$ROOT/libcuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA/lib/stubs/libcuda.so" "$ROOT/libcuda_stub.c"
fi

export CUDA_HOME=$CUDA PATH=$CUDA/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
export LIBRARY_PATH=$CUDA/lib:$CUDA/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
# Portable CPU code, like every binary this project ships.
export RUSTFLAGS="-C target-cpu=x86-64-v3" CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
nvcc --version | tail -1

case "$MODE" in
  check)
    cargo check --release --locked -p prophetkv --features cuda
    # The tests load libcuda.so.1 (the stub: they call no driver function)
    # and NVRTC from the wheels.
    mkdir -p "$CUDA/lib/stubs/so1"
    ln -sf ../libcuda.so "$CUDA/lib/stubs/so1/libcuda.so.1"
    LD_LIBRARY_PATH=$CUDA/lib:$CUDA/lib/stubs/so1${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
      cargo test --release --locked -p prophetkv-model --features cuda --lib ;;
  build|pack)
    cargo build --release --locked -p prophetkv --features cuda
    strip -o "$CARGO_TARGET_DIR/prophetkv" "$CARGO_TARGET_DIR/release/prophetkv"
    xz -T0 -9 -kf "$CARGO_TARGET_DIR/prophetkv"
    ls -la "$CARGO_TARGET_DIR/prophetkv.xz"
    if [[ "$MODE" == pack ]]; then
      PACK=$CARGO_TARGET_DIR/pack
      mkdir -p "$PACK"
      cp "$CARGO_TARGET_DIR/prophetkv.xz" "$PACK/"
      cp "${TORCH_PEER:-../shared/gpu/torch_peer.py}" "$PACK/torch_peer.py"
      # The HTTP load client (CPU only) for the serving benchmark there.
      cargo build --release --locked -p prophetkv --features cuda --example serve_bench
      strip -o "$PACK/serve_bench" "$CARGO_TARGET_DIR/release/examples/serve_bench"
      xz -T0 -9 -f "$PACK/serve_bench"
      du -sh "$PACK"
    fi ;;
  *) echo "usage: $0 check|build|pack" >&2; exit 2 ;;
esac
