#!/usr/bin/env bash
# Builds, from Debian's packages, the base images prophetkv's Dockerfile and
# deploy/compose.yaml name, for machines that cannot pull images:
#
#   debian:bookworm-slim            a minimal Debian 12 root (debootstrap --variant=minbase)
#   rust:$RUST_VERSION-slim-bookworm  that root + a C toolchain + this machine's Rust toolchain
#   redis:7-bookworm                that root + Debian's redis-server
#   prom/prometheus:bookworm        that root + Debian's prometheus
#
# Where the public images can be pulled, none of this is needed: the same
# Dockerfile builds from them. BASES=runtime leaves out the Rust image: an
# image around a binary built outside (`make docker-image-tested`) needs none. Idempotent: an image already present is kept
# (FORCE=1 rebuilds). Needs root (debootstrap) and Debian's mirror.
set -euo pipefail

MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
WORK=${WORK:-/var/tmp/prophetkv-docker-bases}
RUST_VERSION=${RUST_VERSION:-$(rustc --version | awk '{split($2, v, "."); print v[1] "." v[2]}')}
RUST_SYSROOT=$(rustc --print sysroot)

have() { [[ -z "${FORCE:-}" ]] && docker image inspect "$1" >/dev/null 2>&1; }

need_debootstrap() {
  command -v debootstrap >/dev/null && return
  echo "installing debootstrap"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

# A root of Debian $SUITE with the given extra packages, imported as $tag.
# Images get their CMD/ENV from --change, as a Dockerfile would set them.
import_root() {
  local tag=$1 include=$2 prepare=$3; shift 3
  if have "$tag"; then echo "$tag: present"; return; fi
  need_debootstrap
  local root="$WORK/${tag//[:\/]/_}"
  rm -rf "$root" && mkdir -p "$root"
  echo "$tag: debootstrap $SUITE${include:+ with $include}"
  debootstrap --variant=minbase ${include:+--include="$include"} "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 \
    || { tail -20 "$root.log"; exit 1; }
  $prepare "$root"
  # What a slim image leaves out: apt lists, caches, docs.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar -C "$root" -c . | docker import "$@" - "$tag" >/dev/null
  rm -rf "$root"
  echo "$tag: $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')"
}

nothing() { :; }

# This machine's toolchain (compiler, cargo, the host's std), without docs or sources.
copy_rust() {
  local root=$1 dest=$1/usr/local/rust
  mkdir -p "$dest/lib/rustlib"
  cp -a "$RUST_SYSROOT/bin" "$dest/"
  cp -a "$RUST_SYSROOT"/lib/*.so* "$dest/lib/"
  local host
  host=$(rustc -vV | awk '/^host:/ {print $2}')
  cp -a "$RUST_SYSROOT/lib/rustlib/$host" "$dest/lib/rustlib/"
  cp -a "$RUST_SYSROOT"/lib/rustlib/{components,rust-installer-version,manifest-*} "$dest/lib/rustlib/" 2>/dev/null || true
  if [[ ! -x "$dest/bin/cargo" ]]; then cp -a "$(command -v cargo)" "$dest/bin/"; fi
}

mkdir -p "$WORK"
import_root debian:bookworm-slim "" nothing --change 'CMD ["bash"]'
if [[ "${BASES:-all}" != runtime ]]; then
  import_root "rust:$RUST_VERSION-slim-bookworm" "gcc,g++,libc6-dev,make,pkg-config,ca-certificates" copy_rust \
    --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' --change 'CMD ["bash"]'
fi
import_root redis:7-bookworm "redis-server" nothing \
  --change 'EXPOSE 6379' --change 'CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no"]'
import_root prom/prometheus:bookworm "prometheus" nothing \
  --change 'EXPOSE 9090' --change 'ENTRYPOINT ["/usr/bin/prometheus"]'
echo "base images ready (${BASES:-all})"
