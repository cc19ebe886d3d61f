#!/usr/bin/env bash
# tests/gpu/fetch_deps.sh: download (here, where a package mirror can be
# reached) the Debian packages of the libraries align links that the GPU
# machine's image may lack (OpenBLAS, cJSON, PCRE2, ZeroMQ, msgpack-c, and
# pkg-config itself), into build-deps/debs (ignored by git, under /build*/).
# check.sh unpacks them into a private prefix there when pkg-config cannot
# find the libraries: copy build-deps/ to the GPU machine's checkout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=$ROOT/build-deps/debs
mkdir -p "$DEST"
cd "$DEST"
apt-get download \
  libopenblas0-openmp libopenblas-openmp-dev libgfortran5 libquadmath0 \
  libcjson1 libcjson-dev \
  libpcre2-8-0 libpcre2-dev \
  libzmq5 libzmq3-dev libsodium23 libpgm-5.3-0 libnorm1 \
  libmsgpackc2 libmsgpack-dev \
  pkgconf pkgconf-bin libpkgconf3 2>&1 | grep -v "^W: Download is performed unsandboxed" || true
du -sh "$DEST"
ls "$DEST"
