#!/usr/bin/env bash
# generate with the real SmolLM2-135M-Instruct
# (cache/SmolLM2-135M-Instruct.Q4_1.gguf, fetched by scripts/fetch-smollm2.sh;
# without it this prints "skipped" and exits 77, which ctest counts as
# skipped, or fails when CI=true): --chat through a pipe answers "What is the
# capital of France?" with a reply naming Paris, with and without a --system message, a second
# turn sees the first; --prompts on two prompts writes two greedy JSONL
# records that stop at <|im_end|>; tokens/s as generate reports them.
# usage: bash generate_smollm2.sh BIN_DIR
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../../cache/SmolLM2-135M-Instruct.Q4_1.gguf
GEN=$BIN/generate
if [ ! -s "$MODEL" ]; then
    if [ "${CI:-}" = true ]; then
        echo "FAIL: $MODEL is not present (scripts/fetch-smollm2.sh fetches it); with CI=true a real-model test may not skip" >&2
        exit 1
    fi
    echo "skipped: $MODEL is not present (scripts/fetch-smollm2.sh fetches it)"
    exit 77
fi
# OpenMP threads spinning between parallel regions starve each other when
# the machine is busy (other tests, other processes): the same run went from
# ~7 s to ~170 s on a loaded 2-core box. Passive waiting, as the PPO workers use.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh" # finish; this script keeps its own check (condition first)
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
check() { if eval "$1"; then ok; else bad "$2"; fi; }

# --chat, the way a user types it (no system message: SmolLM2's template adds its default one)
start=$(date +%s.%N)
printf 'What is the capital of France?\nAnd of Germany?\n/quit\n' |
    "$GEN" --model "$MODEL" --chat --temperature 0 --max-new-tokens 48 > "$T/chat" 2> "$T/chat_err"; rc=$?
end=$(date +%s.%N)
echo "chat reply 1: $(sed -n 1p "$T/chat")"
echo "chat reply 2: $(sed -n 2p "$T/chat")"
check '[ $rc -eq 0 ] && [ $(wc -l < "$T/chat") -eq 2 ]' "--chat answers both lines ($(cat "$T/chat_err"))"
check 'sed -n 1p "$T/chat" | grep -q "Paris"' "--chat: the capital of France is Paris: $(sed -n 1p "$T/chat")"
check 'sed -n 2p "$T/chat" | grep -q "Berlin"' "--chat: the second turn sees the first (Berlin): $(sed -n 2p "$T/chat")"
echo "chat: 2 turns in $(echo "$end - $start" | bc) s (load included)"

# --chat with SmolLM2's own default system message, as its Jinja template adds it
printf 'What is the capital of France?\n' |
    "$GEN" --model "$MODEL" --chat --temperature 0 --max-new-tokens 48 \
        --system "You are a helpful AI assistant named SmolLM, trained by Hugging Face" > "$T/chat2" 2>&1
echo "chat reply (system message): $(cat "$T/chat2")"
check 'grep -q "Paris" "$T/chat2"' "--chat --system: Paris: $(cat "$T/chat2")"

# --prompts on two prompts, greedy
cat > "$T/p.jsonl" <<'J'
{"prompt": "What is the capital of France?"}
{"messages": [{"role": "user", "content": "Name three colors."}]}
J
"$GEN" --model "$MODEL" --prompts "$T/p.jsonl" --temperature 0 --max-new-tokens 40 > "$T/out" 2> "$T/err"; rc=$?
cat "$T/err"
check '[ $rc -eq 0 ] && [ $(wc -l < "$T/out") -eq 2 ]' "--prompts writes one line per prompt ($(cat "$T/err"))"
check 'sed -n 1p "$T/out" | grep -q "\"completion\":\"[^\"]*Paris"' "--prompts: Paris in the first completion: $(sed -n 1p "$T/out" | cut -c1-300)"
check 'sed -n 1p "$T/out" | grep -q "\"prompt\":\"<|im_start|>system\\\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\\\n<|im_start|>user\\\\nWhat is the capital of France?<|im_end|>\\\\n<|im_start|>assistant\\\\n\""' "--prompts applies the model's own template (SmolLM2's default system message)"
check '[ $(grep -c "\"finish_reason\":\"stop\"" "$T/out") -ge 1 ]' "a completion stops at <|im_end|>"
check 'grep -q "tokens/s" "$T/err"' "generate reports tokens/s"
for i in 1 2; do echo "completion $i: $(sed -n ${i}p "$T/out" | sed 's/.*"completion":"\([^"]*\)".*/\1/')"; done

# batch of 16 identical-length prompts: aggregate tokens/s (a figure, not asserted)
for i in $(seq 16); do echo "{\"prompt\": \"Write a short sentence about the number $((i + 9)).\"}"; done > "$T/p16.jsonl"
"$GEN" --model "$MODEL" --prompts "$T/p16.jsonl" --temperature 0 --max-new-tokens 32 --batch-size 16 > "$T/out16" 2> "$T/err16"; rc=$?
check '[ $rc -eq 0 ] && [ $(wc -l < "$T/out16") -eq 16 ]' "16 prompts at --batch-size 16 ($(cat "$T/err16"))"
echo "batch 16: $(grep tokens/s "$T/err16")"

finish
