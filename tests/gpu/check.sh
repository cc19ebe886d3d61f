#!/usr/bin/env bash
# tests/gpu/check.sh: the CUDA backend's checks on a machine with a GPU, in
# one command (about 3 minutes on one H200, at most 5):
#   1. configure and build align with CUDA (Release, sm_80 + sm_90, -j16);
#   2. run tests/test_cuda_backend (every op and a whole training step of a
#      tiny GPT-2 and Llama against the CPU backend);
#   3. run bench_gpu (bf16 GEMM peak, GEMM modes, attention, training-step
#      tokens/s and MFU for GPT-2 124M, SmolLM2-135M and a 1B Llama), whose
#      table is printed last.
# Logs go to $OUT (the device tool's output folder) when set, else the build
# folder. Exit status: the test's.
#
# Libraries: when pkg-config can't find OpenBLAS, cJSON, PCRE2, ZeroMQ and
# msgpack-c (the GPU image has none of them), the .deb files that
# tests/gpu/fetch_deps.sh saved in build-deps/debs are unpacked into a
# private prefix and used from there: run fetch_deps.sh where a mirror is
# reachable and carry `build-deps` with the call, e.g.
#   run(command="bash tests/gpu/check.sh", carry=["build-deps"], timeout_s=420)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${ALIGN_GPU_BUILD:-$ROOT/build-gpu}
LOG=${OUT:-$BUILD}
JOBS=${JOBS:-16}
mkdir -p "$BUILD" "$LOG"
T0=$(date +%s)
say() { echo "== check.sh [$(( $(date +%s) - T0 ))s] $*"; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 || true
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
export PATH=$(dirname "$NVCC"):$PATH
"$NVCC" --version | tail -1

# ---- libraries
LIBS="openblas libcjson libpcre2-8 libzmq msgpack"
CMAKE_EXTRA=()
if [ "${ALIGN_GPU_DEPS:-auto}" != force ] && command -v pkg-config >/dev/null && pkg-config --exists $LIBS; then
    say "libraries found by pkg-config"
else
    DEBS=$ROOT/build-deps/debs
    if ! ls "$DEBS"/*.deb >/dev/null 2>&1; then
        echo "check.sh: pkg-config cannot find $LIBS and $DEBS holds no packages;" \
             "run tests/gpu/fetch_deps.sh on a machine with a mirror and carry build-deps" >&2
        exit 2
    fi
    SYS=/tmp/align-deps
    rm -rf "$SYS" && mkdir -p "$SYS"
    for f in "$DEBS"/*.deb; do dpkg-deb -x "$f" "$SYS"; done
    M=$SYS/usr/lib/x86_64-linux-gnu
    # Requires.private names the static-link dependencies, whose .pc files we don't carry
    find "$SYS" -name '*.pc' -exec sed -i '/^Requires.private/d' {} +
    export PKG_CONFIG_SYSROOT_DIR=$SYS
    export PKG_CONFIG_LIBDIR=$M/openblas-openmp/pkgconfig:$M/pkgconfig:$SYS/usr/share/pkgconfig
    export LD_LIBRARY_PATH=$M:$M/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export LIBRARY_PATH=$M:$M/openblas-openmp${LIBRARY_PATH:+:$LIBRARY_PATH}
    PKGC=$(command -v pkg-config || echo "$SYS/usr/bin/pkgconf")
    export PKG_CONFIG=$PKGC
    CMAKE_EXTRA+=(-DPKG_CONFIG_EXECUTABLE="$PKGC")
    "$PKGC" --exists $LIBS || { echo "check.sh: the carried libraries are incomplete" >&2; "$PKGC" --print-errors --exists $LIBS; exit 2; }
    say "libraries from build-deps (unpacked in $SYS)"
fi

# ---- build
say "configure"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DALIGN_CUDA=ON \
    -DCMAKE_CUDA_COMPILER="$NVCC" "-DCMAKE_CUDA_ARCHITECTURES=80-real;90" "${CMAKE_EXTRA[@]}" \
    > "$LOG/configure.log" 2>&1 || { tail -30 "$LOG/configure.log"; echo "check.sh: configure failed" >&2; exit 2; }
say "build"
cmake --build "$BUILD" -j"$JOBS" --target align_core > "$LOG/build.log" 2>&1 || { tail -40 "$LOG/build.log"; exit 2; }

# Link a program by hand when the build has no target for it (tests/gpu not
# included yet) or its link fails (the C++ runtime missing from align_cuda).
link_by_hand() { # name source output
    say "linking $1 by hand"
    cc -O3 -std=gnu11 -DALIGN_HAVE_CUDA=1 -I"$ROOT/common" -I"$ROOT/tests" -I"$(dirname "$NVCC")/../include" \
        -DALIGN_TEST_DIR="\"$ROOT/tests\"" -DALIGN_SHARED_DIR="\"$ROOT/../shared\"" -DALIGN_BIN_DIR="\"$BUILD/bin\"" \
        "$2" -o "$3" "$BUILD/common/libalign_core.a" "$BUILD/common/libalign_cuda.a" "$BUILD/common/libalign_core.a" \
        $(${PKG_CONFIG:-pkg-config} --libs $LIBS) -fopenmp -L"$(dirname "$NVCC")/../lib64" \
        -Wl,-rpath,"$(dirname "$NVCC")/../lib64" -lcublas -lcublasLt -lcudart -lstdc++ -lm >> "$LOG/build.log" 2>&1
}
TEST=$BUILD/tests/test_cuda_backend
BENCH=$BUILD/bin/bench_gpu
cmake --build "$BUILD" -j"$JOBS" --target test_cuda_backend >> "$LOG/build.log" 2>&1 ||
    link_by_hand test_cuda_backend "$ROOT/tests/test_cuda_backend.c" "$TEST" || { tail -40 "$LOG/build.log"; exit 2; }
cmake --build "$BUILD" -j"$JOBS" --target bench_gpu >> "$LOG/build.log" 2>&1 ||
    { mkdir -p "$BUILD/bin"; link_by_hand bench_gpu "$ROOT/tests/gpu/bench_gpu.c" "$BENCH"; } ||
    { tail -40 "$LOG/build.log"; exit 2; }
grep -iE "warning" "$LOG/build.log" | grep -i cuda | head -20

# ---- test, then benchmark
say "test_cuda_backend"
timeout 150 "$TEST" > "$LOG/test.log" 2>&1
status=$?
grep -E "FAIL|skipped|passed" "$LOG/test.log" | tail -40
say "bench_gpu"
timeout 170 "$BENCH" 2>&1 | tee "$LOG/bench.log"
say "done; test exit status $status"
tail -1 "$LOG/test.log"
exit $status
