# Shared by the CLI tests (sourced): the check counter and the closing line.
# `check NAME CMD` counts CMD's success and prints NAME when it fails;
# `finish [PREFIX]` prints "N passed, N failed" and is the script's status:
# non-zero on a failure, and when no check ran at all (a script that checks
# nothing has not passed).
pass=${pass:-0} fail=${fail:-0} # sourced twice (check.sh, then lib/ppo.sh) keeps the count
check() { if eval "$2"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $1"; fi; }
finish() {
    echo "${1:+$1: }$pass passed, $fail failed"
    if [ $((pass + fail)) -eq 0 ]; then
        echo "FAIL: no check ran"
        return 1
    fi
    [ "$fail" -eq 0 ]
}
