#!/usr/bin/env bash
# generate --chat and Ctrl-C, as llama.cpp and Ollama behave: SIGINT during
# a reply stops the reply and the prompt comes back (the conversation goes
# on); SIGINT at the prompt ends the program (exit 130). The chat reads a
# FIFO; the model is a random one from model_init whose greedy replies run
# to --max-new-tokens (seconds), long enough to be interrupted.
set -u
BIN=$1
T=$(mktemp -d)
GP=
cleanup() { [ -n "$GP" ] && kill "$GP" 2>/dev/null; exec 3>&- 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
. "$(dirname "$0")/lib/check.sh"
# wait (up to 20 s) until a command succeeds
wait_for() { for _ in $(seq 200); do eval "$1" && return 0; sleep 0.1; done; return 1; }

"$BIN/model_init" --out "$T/m.ckpt" --max-seq-len 4096 --seed 3 2>/dev/null || { echo "model_init failed"; exit 1; }
N=4000

# 1. Ctrl-C during a reply: the reply stops, the next message is answered
mkfifo "$T/in"
"$BIN/generate" --model "$T/m.ckpt" --chat --temperature 0 --max-new-tokens $N < "$T/in" > "$T/out" 2> "$T/err" &
GP=$!
exec 3> "$T/in"
echo "hello" >&3
check "the reply starts streaming" "wait_for '[ \$(wc -c < $T/out) -ge 20 ]'"
kill -INT $GP
check "the reply stops at Ctrl-C ($(cat $T/err))" "wait_for 'grep -q \"reply stopped (Ctrl-C)\" $T/err'"
check "the program is still running" "ps -o stat= -p $GP | grep -qv '^Z'"
first=$(wc -c < "$T/out")
check "the stopped reply is shorter than --max-new-tokens ($first bytes)" "[ $first -lt $N ]"
echo "/reset" >&3
check "the chat goes on after the stop" "wait_for 'grep -q \"conversation reset\" $T/out'"
echo "/quit" >&3
wait $GP; rc=$?
GP=
exec 3>&-
check "/quit after a stopped reply exits 0 (rc $rc)" "[ $rc -eq 0 ]"

# 2. Ctrl-C at the prompt ends the program
rm -f "$T/in" && mkfifo "$T/in"
"$BIN/generate" --model "$T/m.ckpt" --chat --temperature 0 --max-new-tokens 3 < "$T/in" > "$T/out2" 2> "$T/err2" &
GP=$!
exec 3> "$T/in"
echo "hello" >&3
check "a short reply is written" "wait_for '[ \$(wc -l < $T/out2) -ge 1 ]'"
sleep 0.3
kill -INT $GP
wait $GP; rc=$?
GP=
exec 3>&-
check "Ctrl-C at the prompt exits 130 (rc $rc)" "[ $rc -eq 130 ]"

finish
