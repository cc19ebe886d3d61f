#!/usr/bin/env bash
# Install the Debian packages align builds against (idempotent). Runs apt-get
# as root, through sudo when needed. The CUDA toolkit is optional and not
# installed here: CMake builds the CUDA backend when it finds nvcc.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config
      libopenblas-openmp-dev libzmq3-dev libmsgpack-dev libcjson-dev libpcre2-dev
      libmicrohttpd-dev libprotobuf-c-dev protobuf-c-compiler python3
      libcsv-dev libzip-dev libxml2-dev openmpi-bin libopenmpi-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
