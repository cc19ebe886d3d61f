#!/usr/bin/env bash
# Configure and build align into build/ (Release). Extra arguments go to
# CMake, e.g. scripts/build.sh -DALIGN_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
# nvcc lives outside PATH on many machines; CMake builds the CUDA backend when it finds it.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
gen=()
command -v ninja >/dev/null 2>&1 && [ ! -f build/Makefile ] && gen=(-G Ninja)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${gen[@]}" "$@" >/dev/null
cmake --build build -j"$(nproc)"
