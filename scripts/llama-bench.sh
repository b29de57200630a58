#!/usr/bin/env bash
# Builds llama.cpp's `llama-bench` from source for side-by-side measurements
# (`make bench-runtime`), and prints the path of the binary.
#
# The source is the llama.cpp that the llama-cpp-python sdist vendors (a
# pinned release from PyPI, checked by sha256); cmake and ninja come from
# PyPI too. Everything lands in target/llama.cpp and is never committed or
# shipped.
#
# The build enables exactly the x86 extensions this machine's kernel reports
# (AVX2/FMA/F16C, AVX-512, VNNI, BF16) and never AMX: some CPUs list AMX in
# cpuid without the OS granting it, and llama.cpp built with it dies there.
set -euo pipefail

VERSION=0.3.36
SDIST_URL=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/target/llama.cpp"
bin="$dir/build/bin/llama-bench"

if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi
mkdir -p "$dir"

# Build tools in their own venv, so that the project's venv stays as it is.
tools="$dir/venv"
if [ ! -x "$tools/bin/cmake" ]; then
    python3 -m venv "$tools" >&2
    "$tools/bin/pip" install -q cmake ninja >&2
fi

src="$dir/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -f "$src/CMakeLists.txt" ]; then
    echo "fetching llama-cpp-python $VERSION (sdist) for its vendored llama.cpp" >&2
    rm -rf "$dir/sdist" "$dir/src"
    mkdir -p "$dir/sdist" "$dir/src"
    tarball="$dir/sdist/llama_cpp_python-$VERSION.tar.gz"
    curl -fsSL "$SDIST_URL" -o "$tarball"
    echo "$SDIST_SHA256  $tarball" | sha256sum -c --quiet -
    tar -xzf "$tarball" -C "$dir/src"
fi

flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { [[ " $flags " == *" $1 "* ]] && echo ON || echo OFF; }

echo "building llama-bench (avx2=$(has avx2) avx512f=$(has avx512f) avx512_vnni=$(has avx512_vnni) avx512_bf16=$(has avx512_bf16), no AMX)" >&2
PATH="$tools/bin:$PATH" cmake -S "$src" -B "$dir/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DGGML_NATIVE=OFF -DGGML_OPENMP=ON \
    -DGGML_AVX=ON -DGGML_AVX2="$(has avx2)" -DGGML_FMA="$(has fma)" -DGGML_F16C="$(has f16c)" \
    -DGGML_AVX_VNNI="$(has avx_vnni)" \
    -DGGML_AVX512="$(has avx512f)" -DGGML_AVX512_VBMI="$(has avx512vbmi)" \
    -DGGML_AVX512_VNNI="$(has avx512_vnni)" -DGGML_AVX512_BF16="$(has avx512_bf16)" \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF >&2
PATH="$tools/bin:$PATH" cmake --build "$dir/build" --target llama-bench -j "$(nproc)" >&2
echo "$bin"
