#!/usr/bin/env bash
# The preference-labeling scripts (scripts/label_*.py): runs
# tests/test_labeling.py (Python 3 standard library only), which uses fake
# generate / rm_score programs from tests/fixtures/labeling and, when
# BIN_DIR holds a built generate, also the real one on the tiny Llama.
# usage: bash labeling.sh BIN_DIR
BIN=${1:-}
HERE=$(cd "$(dirname "$0")" && pwd)
if ! command -v python3 > /dev/null; then
    echo "FAIL: python3 not found" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
ALIGN_BIN_DIR=$BIN python3 "$HERE/../test_labeling.py"
