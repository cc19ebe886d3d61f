#!/usr/bin/env bash
# tests/gpu/check.sh: build align with CUDA and check its CUDA backend on this
# machine's GPU, in one command (about 3 minutes on one H200, at most 5).
#
#   usage: bash tests/gpu/check.sh [OUTPUT_DIR]     (default ./gpu-check-out)
#
# Needs: an NVIDIA GPU with its driver (nvidia-smi), the CUDA toolkit (nvcc on
# PATH or in /usr/local/cuda/bin; cuBLAS), CMake, a C compiler, and the
# libraries align links (OpenBLAS, cJSON, PCRE2, ZeroMQ, msgpack-c; see
# scripts/install-deps.sh). Where they can't be installed, run
# tests/gpu/fetch_deps.sh on a machine that reaches a Debian mirror and copy
# the build-deps/ folder it fills to this checkout: the packages are then
# unpacked into a private prefix and used from there.
#
# What it runs:
#   1. configures and builds align with -DALIGN_CUDA=ON (Release, sm_80 +
#      sm_90, $JOBS jobs, default 16) into $ALIGN_GPU_BUILD (default
#      build-gpu/);
#   2. tests/test_cuda_backend: every op and a whole training step of a tiny
#      GPT-2 and Llama on the GPU against the CPU backend; a FAIL line names
#      the op, the tolerance and the error measured;
#   3. the NCCL path (when NCCL and mpirun are there): sft_run --device cuda
#      under mpirun -np 1, its gradients summed by ncclAllReduce, must give
#      a plain run's losses, and so must the same world of one joined by
#      --dist-init without mpirun (nccl/ in OUTPUT_DIR);
#   4. bench_gpu: bf16 GEMM peak, GEMM modes, attention, training-step
#      tokens/s and MFU for GPT-2 124M, SmolLM2-135M and a 1B Llama.
#
# What it writes to OUTPUT_DIR: configure.log, build.log, test.log (the
# test's output, ending "N passed, N failed") and bench.log. The benchmark's
# table is printed last: one row per model with tokens per step, ms/step,
# tokens/s, MFU (model FLOPs per token x tokens/s over the measured bf16 GEMM
# peak of the first line) and the GPU memory the model and its step took
# (GiB); "failed" in a row means that model's step could not run (its error
# is in bench.log). The figures are for reading: nothing is asserted on them.
#
# Exit status: 0 when test_cuda_backend passed; 1 when a check failed or no
# GPU was found (a GPU check that cannot run has not passed); 2 when the
# build could not be made.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${ALIGN_GPU_BUILD:-$ROOT/build-gpu}
LOG=${1:-./gpu-check-out}
JOBS=${JOBS:-16}
mkdir -p "$BUILD" "$LOG" || { echo "check.sh: cannot create $BUILD or $LOG" >&2; exit 2; }
LOG=$(cd "$LOG" && pwd)
T0=$(date +%s)
say() { echo "== check.sh [$(( $(date +%s) - T0 ))s] $*"; }

say "results go to $LOG"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 ||
    echo "check.sh: nvidia-smi found no GPU (the test below will say so too)" >&2
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
if [ ! -x "$NVCC" ]; then
    echo "check.sh: nvcc not found on PATH or in /usr/local/cuda/bin: install the CUDA toolkit" >&2
    exit 2
fi
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
        echo "check.sh: pkg-config cannot find $LIBS and $DEBS holds no packages:" \
             "install them (scripts/install-deps.sh), or run tests/gpu/fetch_deps.sh where a" \
             "Debian mirror is reachable and copy its build-deps/ folder here" >&2
        exit 2
    fi
    SYS=/tmp/align-deps
    rm -rf "$SYS" && mkdir -p "$SYS"
    for f in "$DEBS"/*.deb; do dpkg-deb -x "$f" "$SYS"; done
    M=$SYS/usr/lib/x86_64-linux-gnu
    # Requires.private names static-link dependencies whose .pc files fetch_deps.sh does not fetch
    find "$SYS" -name '*.pc' -exec sed -i '/^Requires.private/d' {} +
    export PKG_CONFIG_SYSROOT_DIR=$SYS
    export PKG_CONFIG_LIBDIR=$M/openblas-openmp/pkgconfig:$M/pkgconfig:$SYS/usr/share/pkgconfig
    export LD_LIBRARY_PATH=$M:$M/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export LIBRARY_PATH=$M:$M/openblas-openmp${LIBRARY_PATH:+:$LIBRARY_PATH}
    PKGC=$(command -v pkg-config || echo "$SYS/usr/bin/pkgconf")
    export PKG_CONFIG=$PKGC
    CMAKE_EXTRA+=(-DPKG_CONFIG_EXECUTABLE="$PKGC")
    "$PKGC" --exists $LIBS || { echo "check.sh: the packages in $DEBS are incomplete (rerun tests/gpu/fetch_deps.sh)" >&2; "$PKGC" --print-errors --exists $LIBS; exit 2; }
    say "libraries from build-deps (unpacked in $SYS)"
fi

# ---- build
say "configure"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DALIGN_CUDA=ON \
    -DCMAKE_CUDA_COMPILER="$NVCC" "-DCMAKE_CUDA_ARCHITECTURES=80-real;90" "${CMAKE_EXTRA[@]}" \
    > "$LOG/configure.log" 2>&1 || { tail -30 "$LOG/configure.log"; echo "check.sh: configure failed" >&2; exit 2; }
say "build"
cmake --build "$BUILD" -j"$JOBS" --target align_core > "$LOG/build.log" 2>&1 ||
    { tail -40 "$LOG/build.log"; echo "check.sh: the build failed ($LOG/build.log)" >&2; exit 2; }

# Link a program by hand when the build has no target for it (tests/gpu not
# included yet) or its link fails (the C++ runtime missing from align_cuda).
link_by_hand() { # name source output
    say "linking $1 by hand"
    cc -O3 -std=gnu11 -DALIGN_HAVE_CUDA=1 -I"$ROOT/common" -I"$ROOT/tests" -I"$(dirname "$NVCC")/../include" \
        -DALIGN_TEST_DIR="\"$ROOT/tests\"" -DALIGN_BIN_DIR="\"$BUILD/bin\"" \
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
case $status in
    0) verdict="test_cuda_backend passed" ;;
    77) verdict="test_cuda_backend found no CUDA device: nothing was checked"; status=1 ;;
    124) verdict="test_cuda_backend ran past 150 s"; status=1 ;;
    *) verdict="test_cuda_backend failed (exit status $status; FAIL lines above, all in $LOG/test.log)"; status=1 ;;
esac
# ---- NCCL with a world of one: sft_run under mpirun -np 1 sums its gradients
# with ncclAllReduce (common/train/dist_nccl.c); its losses must be a plain
# run's, bit for bit (a sum over one rank changes nothing).
if grep -q "NCCL:" "$LOG/configure.log" && command -v mpirun >/dev/null &&
   cmake --build "$BUILD" -j"$JOBS" --target sft_run >> "$LOG/build.log" 2>&1; then
    say "NCCL path (mpirun -np 1 sft_run --device cuda)"
    N=$LOG/nccl; mkdir -p "$N"
    for i in $(seq 24); do printf '{"prompt": "say %d", "completion": "%s"}\n' $i "$(printf 'word%.0s ' $(seq $((i % 5 + 1))))"; done > "$N/sft.jsonl"
    SFT=(--device cuda --model "$ROOT/tests/fixtures/hf_tiny_qwen2" --data "$N/sft.jsonl" --batch-size 4 --max-steps 4 --lr 1e-3)
    timeout 120 "$BUILD/bin/sft_run" "${SFT[@]}" --out "$N/plain.ckpt" --metrics "$N/plain.jsonl" > "$N/plain.log" 2>&1
    timeout 120 env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 1 "$BUILD/bin/sft_run" "${SFT[@]}" \
        --out "$N/nccl.ckpt" --metrics "$N/nccl.jsonl" > "$N/nccl.log" 2>&1
    nccl_rc=$?
    losses() { grep -o '"loss": [-0-9.e]*' "$1" 2>/dev/null; }
    if [ $nccl_rc -eq 0 ] && [ -n "$(losses "$N/plain.jsonl")" ] && [ "$(losses "$N/plain.jsonl")" = "$(losses "$N/nccl.jsonl")" ]; then
        echo "NCCL path: 4 steps under mpirun -np 1, losses equal to the plain run's"
    else
        echo "NCCL path FAILED (exit $nccl_rc): see $N/nccl.log"; tail -5 "$N/nccl.log"
        verdict="$verdict; the NCCL path failed"; status=1
    fi
    # the same world of one joined without mpirun (--dist-init: rank 0's
    # rendezvous and ompi-server, then NCCL as under mpirun)
    timeout 120 "$BUILD/bin/sft_run" "${SFT[@]}" --dist-init tcp://127.0.0.1:29631 --rank 0 --world-size 1 \
        --out "$N/init.ckpt" --metrics "$N/init.jsonl" > "$N/init.log" 2>&1
    init_rc=$?
    if [ $init_rc -eq 0 ] && [ "$(losses "$N/plain.jsonl")" = "$(losses "$N/init.jsonl")" ]; then
        echo "NCCL path with --dist-init: 4 steps, losses equal to the plain run's"
    else
        echo "NCCL path with --dist-init FAILED (exit $init_rc): see $N/init.log"; tail -5 "$N/init.log"
        verdict="$verdict; the NCCL path with --dist-init failed"; status=1
    fi
else
    echo "NCCL path: not checked (the build found no NCCL, or no mpirun)"
fi
say "bench_gpu"
timeout 170 "$BENCH" 2>&1 | tee "$LOG/bench.log"
say "done: $verdict; logs in $LOG"
exit $status
