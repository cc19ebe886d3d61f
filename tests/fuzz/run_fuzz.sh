#!/usr/bin/env bash
# Run every libFuzzer target in BUILD_DIR/tests/fuzz for a bounded time.
#   bash tests/fuzz/run_fuzz.sh BUILD_DIR [SECONDS_PER_TARGET] [JOBS]
# Each target starts from a copy of tests/fuzz/corpus/<target>/ in a temp dir
# (the checked-in seeds are never modified), with
#   -max_total_time=SECONDS -rss_limit_mb=2048 -timeout=10 -malloc_limit_mb=2048
# so a crash, a sanitizer report (UndefinedBehaviorSanitizer: unless listed
# in tests/fuzz/ubsan.supp), a leak, a hang over 10 s or an allocation over
# 2 GiB fails the target. Up to JOBS targets run at once (default 2). Prints
# one line per target (runs, exec/s, coverage, corpus growth); a failing
# target's log tail and its reproducer are kept under FUZZ_ARTIFACTS
# (default ./fuzz-artifacts). Exit status: 0 when every target ran clean.
set -uo pipefail
BUILD=$(cd "${1:?usage: run_fuzz.sh BUILD_DIR [SECONDS] [JOBS]}" && pwd) || exit 1
SECS=${2:-20}
JOBS=${3:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
ART=${FUZZ_ARTIFACTS:-fuzz-artifacts}  # made only when a target fails
[[ $ART = /* ]] || ART=$PWD/$ART
# UndefinedBehaviorSanitizer reports are crashes, except the known ones
# listed in ubsan.supp (each with its reproducer in corpus/ and its fix).
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:suppressions=$HERE/ubsan.supp}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

targets=()
for src in "$HERE"/fuzz_*.c; do
    name=$(basename "$src" .c)
    bin=$BUILD/tests/fuzz/$name
    if [ ! -x "$bin" ]; then
        echo "fuzz: $bin is not built" >&2
        exit 1
    fi
    targets+=("$name")
done

run_one() {
    local name=$1 bin=$BUILD/tests/fuzz/$1
    mkdir -p "$T/$name/corpus" "$T/$name/work"
    [ -d "$HERE/corpus/$name" ] && cp "$HERE/corpus/$name"/* "$T/$name/corpus/" 2>/dev/null
    # run in its own dir: targets that write their input to a file use
    # /dev/shm or /tmp with the pid in the name, crash files land here
    (cd "$T/$name/work" && "$bin" -max_total_time="$SECS" -rss_limit_mb=2048 -malloc_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 -artifact_prefix="$T/$name/work/" "$T/$name/corpus" \
        > "$T/$name/log" 2>&1)
    echo $? > "$T/$name/rc"
}

pids=()
for name in "${targets[@]}"; do
    run_one "$name" &
    pids+=($!)
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
done
wait

fail=0
for name in "${targets[@]}"; do
    rc=$(cat "$T/$name/rc" 2>/dev/null || echo 99)
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$T/$name/log" | grep -o '[0-9]*$')
    eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$T/$name/log" | grep -o '[0-9]*$')
    last=$(grep -E '^#[0-9]+' "$T/$name/log" | tail -1 | grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*/[0-9A-Za-z]*')
    n_seed=$(ls "$HERE/corpus/$name" 2>/dev/null | wc -l)
    if [ "$rc" = 0 ]; then
        printf 'fuzz: %-17s ok    %8s runs %6s/s  %s (from %s seeds)\n' "$name" "${runs:-?}" "${eps:-?}" "$last" "$n_seed"
    else
        fail=1
        printf 'fuzz: %-17s FAIL  exit %s after %s runs\n' "$name" "$rc" "${runs:-?}"
        mkdir -p "$ART/$name"
        cp "$T/$name/log" "$ART/$name/log"
        cp "$T/$name/work"/crash-* "$T/$name/work"/leak-* "$T/$name/work"/timeout-* "$T/$name/work"/oom-* \
            "$ART/$name/" 2>/dev/null
        grep -E 'ERROR|SUMMARY|runtime error|^    #[0-9] ' "$T/$name/log" | head -20 | sed 's/^/    /'
        echo "    reproducer and log: $ART/$name/ (rerun: $BUILD/tests/fuzz/$name FILE)"
    fi
done
exit $fail
