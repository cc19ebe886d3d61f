#!/usr/bin/env bash
# generate end to end on the tiny Llama fixture (tests/fixtures/hf_tiny_llama,
# a Hugging Face directory with a llama3 chat template): JSONL output shape,
# greedy and seeded sampling reproducible across --batch-size/--prefill-chunk,
# --n, --stop strings, --config, --out, a .ckpt of the same model giving the
# same completions, bad input refused with a message, and --chat through a
# pipe (/reset forgets the conversation, /quit ends).
# usage: bash generate.sh BIN_DIR
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../fixtures/hf_tiny_llama
GEN=$BIN/generate
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh" # finish; this script keeps its own check (condition first)
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
check() { if eval "$1"; then ok; else bad "$2"; fi; }
# logprobs shift in the last printed digit with the batch shape (sgemm blocking)
no_lp() { sed 's/"logprobs":\[[^]]*\]//' "$1"; }
n_tokens() { sed -n "${2}p" "$1" | grep -o '"tokens":\[[^]]*\]' | tr -cd ',' | wc -c | awk '{print $1 + 1}'; }

cat > "$T/p.jsonl" <<'J'
{"prompt": "Hello there"}
{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]}
{"prompt": "The quick brown fox", "chosen": " jumps", "rejected": " sleeps"}
J

check '"$GEN" --help > "$T/help" && grep -q -- "--temperature" "$T/help" && grep -q -- "--chat" "$T/help"' "--help lists the flags"

# greedy: shape, determinism, independence of slots and chunking
"$GEN" --model "$MODEL" --prompts "$T/p.jsonl" --temperature 0 --max-new-tokens 8 > "$T/g1" 2> "$T/err"; rc=$?
check '[ $rc -eq 0 ] && [ $(wc -l < "$T/g1") -eq 3 ]' "greedy run writes one line per prompt ($(cat "$T/err"))"
check '[ $(grep -c "\"finish_reason\":\"length\"" "$T/g1") -eq 3 ]' "every greedy completion ends by length"
check '[ "$(n_tokens "$T/g1" 1)" = 8 ] && [ "$(n_tokens "$T/g1" 3)" = 8 ]' "max-new-tokens 8 gives 8 tokens"
check 'grep -q "\"prompt\":\"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\\\n\\\\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\\\n\\\\n\"" "$T/g1"' "the model's llama3 template is applied by default"
check 'grep -q "<|start_header_id|>system<|end_header_id|>\\\\n\\\\nBe brief.<|eot_id|>" "$T/g1"' "message records keep their system message"
check 'sed -n 1p "$T/g1" | grep -q "\"logprobs\":\[-[0-9.]*,-"' "logprobs are listed"
check 'grep -q "\"index\":2,\"sample\":0" "$T/g1"' "records carry index and sample"
"$GEN" --model "$MODEL" --prompts "$T/p.jsonl" --temperature 0 --max-new-tokens 8 --batch-size 1 --prefill-chunk 3 > "$T/g2" 2>/dev/null
check 'cmp -s <(no_lp "$T/g1") <(no_lp "$T/g2")' "greedy output does not depend on --batch-size / --prefill-chunk"
"$GEN" --model "$MODEL" --prompts "$T/p.jsonl" --temperature 0 --max-new-tokens 8 --out "$T/g3" 2>/dev/null
check 'cmp -s "$T/g1" "$T/g3"' "--out writes what stdout shows"
"$GEN" --model "$MODEL" --prompts "$T/p.jsonl" --chat-template none --temperature 0 --max-new-tokens 2 > "$T/g4" 2>/dev/null
check 'grep -q "\"prompt\":\"Hello there\"" "$T/g4"' "--chat-template none feeds the raw prompt"

"$GEN" --model "$MODEL" --prompts "$T/p.jsonl" --temperature 0 --max-new-tokens 4 --max-length 12 > "$T/g5" 2>/dev/null
check '[ $(wc -l < "$T/g5") -eq 3 ] && ! grep -q "begin_of_text" "$T/g5"' "--max-length keeps the end of a long prompt"

# seeded sampling
S="--temperature 0.9 --top-p 0.95 --top-k 100 --n 2 --max-new-tokens 10"
"$GEN" --model "$MODEL" --prompts "$T/p.jsonl" $S --seed 5 > "$T/s1" 2>/dev/null
"$GEN" --model "$MODEL" --prompts "$T/p.jsonl" $S --seed 5 --batch-size 1 --prefill-chunk 2 > "$T/s2" 2>/dev/null
"$GEN" --model "$MODEL" --prompts "$T/p.jsonl" $S --seed 6 > "$T/s3" 2>/dev/null
check '[ $(wc -l < "$T/s1") -eq 6 ]' "--n 2 gives two completions per prompt"
check 'cmp -s <(no_lp "$T/s1") <(no_lp "$T/s2")' "the same seed samples the same with another --batch-size"
check '! cmp -s "$T/s1" "$T/s3"' "another seed samples differently"
check '[ "$(sed -n 1p "$T/s1" | grep -o "\"tokens\":[^]]*")" != "$(sed -n 2p "$T/s1" | grep -o "\"tokens\":[^]]*")" ]' "the two samples of a prompt differ"

# a stop string: the first two-letter run of the greedy completion of record 1
comp=$(sed -n 1p "$T/g1" | sed 's/.*"completion":"\(.*\)","tokens".*/\1/')
stop=$(printf '%s' "$comp" | grep -o '[A-Za-z0-9][A-Za-z0-9]' | head -1)
if [ -n "$stop" ]; then
    prefix=${comp%%"$stop"*}
    "$GEN" --model "$MODEL" --prompts "$T/p.jsonl" --temperature 0 --max-new-tokens 8 --stop "zzzq,$stop" > "$T/st" 2>/dev/null
    line=$(sed -n 1p "$T/st")
    check '[[ "$line" == *"\"completion\":\"$prefix\","* ]]' "--stop cuts the completion before the stop string ($stop): $line"
    check '[[ "$line" == *"\"finish_reason\":\"stop\""* ]]' "--stop ends with finish_reason stop"
    check '[ "$(n_tokens "$T/st" 1)" -lt 8 ]' "--stop ends generation early"
    "$GEN" --model "$MODEL" --prompts "$T/p.jsonl" --temperature 0 --max-new-tokens 8 --stop zzzq --stop "$stop" > "$T/st2" 2>/dev/null
    check 'cmp -s "$T/st" "$T/st2"' "--stop repeated equals --stop comma-separated"
else
    bad "the greedy completion has no two-letter run to stop on: $comp"
fi

# --config, and the same model as a .ckpt
echo '{"temperature": 0, "max-new-tokens": 4, "batch-size": 2}' > "$T/cfg.json"
"$GEN" --config "$T/cfg.json" --model "$MODEL" --prompts "$T/p.jsonl" > "$T/c1" 2>/dev/null; rc=$?
check '[ $rc -eq 0 ] && [ "$(n_tokens "$T/c1" 2)" = 4 ]' "--config sets max-new-tokens"
if [ -x "$BIN/ckpt_convert" ]; then
    if "$BIN/ckpt_convert" "$MODEL" "$T/tiny.ckpt" > /dev/null 2>&1; then
        "$GEN" --model "$T/tiny.ckpt" --prompts "$T/p.jsonl" --temperature 0 --max-new-tokens 8 > "$T/k1" 2>/dev/null
        check 'cmp -s "$T/g1" "$T/k1"' "a .ckpt of the model gives the same greedy completions"
    else
        bad "ckpt_convert failed on the fixture"
    fi
else
    echo "note: $BIN/ckpt_convert not built; .ckpt check skipped"
fi

# bad input
"$GEN" --prompts "$T/p.jsonl" > /dev/null 2> "$T/e1"; rc=$?
check '[ $rc -ne 0 ] && grep -q -- "--model" "$T/e1"' "missing --model is refused"
"$GEN" --model "$MODEL" --prompts "$T/nope.jsonl" > /dev/null 2> "$T/e2"; rc=$?
check '[ $rc -ne 0 ] && grep -q "nope.jsonl" "$T/e2" && [ $(wc -l < "$T/e2") -eq 1 ]' "a missing prompt file is named in one line: $(cat "$T/e2")"
"$GEN" --model "$MODEL" --prompts "$T/p.jsonl" --temperature -1 > /dev/null 2> "$T/e3"; rc=$?
check '[ $rc -ne 0 ] && grep -q "temperature" "$T/e3"' "a negative temperature is refused"
"$GEN" --model "$T/none" --prompts "$T/p.jsonl" > /dev/null 2> "$T/e4"; rc=$?
check '[ $rc -ne 0 ] && grep -q "none" "$T/e4"' "a missing model is named"
printf '{"prompt": "ok"}\n{"nothing": 1}\n{"prompt": "fine"}\n' > "$T/bad.jsonl"
"$GEN" --model "$MODEL" --prompts "$T/bad.jsonl" --max-new-tokens 2 > "$T/b1" 2> "$T/e5"; rc=$?
check '[ $rc -ne 0 ] && grep -q "bad.jsonl:2" "$T/e5"' "a bad record is reported with file and line: $(cat "$T/e5")"
"$GEN" --model "$MODEL" --prompts "$T/bad.jsonl" --max-new-tokens 2 --skip-bad > "$T/b2" 2> "$T/e6"; rc=$?
check '[ $rc -eq 0 ] && [ $(wc -l < "$T/b2") -eq 2 ] && grep -q "\"index\":1" "$T/b2"' "--skip-bad skips the record and goes on"

# --chat through a pipe
printf 'hello\nhow are you\n/reset\nhello\n/quit\nnever read\n' |
    "$GEN" --model "$MODEL" --chat --temperature 0 --max-new-tokens 6 > "$T/chat" 2> "$T/chat_err"; rc=$?
check '[ $rc -eq 0 ] && [ $(wc -l < "$T/chat") -eq 4 ]' "--chat answers each line and /quit ends it ($(cat "$T/chat_err"))"
check '[ "$(sed -n 1p "$T/chat")" = "$(sed -n 4p "$T/chat")" ]' "after /reset the same message gets the same greedy reply"
check 'grep -q "conversation reset" "$T/chat"' "/reset is acknowledged"
printf 'hello\n' | "$GEN" --model "$MODEL" --chat --temperature 0 --max-new-tokens 6 > "$T/chat2" 2>/dev/null
check '[ "$(sed -n 1p "$T/chat")" = "$(sed -n 1p "$T/chat2")" ]' "end of input ends the chat"
check '! cmp -s <(sed -n 1p "$T/chat") <(sed -n 2p "$T/chat")' "the second turn sees the conversation (a different reply)"

# a full disk: every record's write is checked, the file is named, the exit is non-zero
for i in $(seq 1 200); do echo "{\"prompt\": \"Hello there, number $i\"}"; done > "$T/many.jsonl"
"$GEN" --model "$MODEL" --prompts "$T/many.jsonl" --temperature 0 --max-new-tokens 4 --out /dev/full 2> "$T/full.err"; rc=$?
check '[ $rc -ne 0 ] && grep -q -- "--out /dev/full: write failed (No space left on device)" "$T/full.err" && ! grep -q "tokens/s" "$T/full.err"' "--out /dev/full fails naming the file ($(cat "$T/full.err"))"
"$GEN" --model "$MODEL" --prompts "$T/many.jsonl" --temperature 0 --max-new-tokens 4 > /dev/full 2> "$T/full2.err"; rc=$?
check '[ $rc -ne 0 ] && grep -q "standard output: write failed" "$T/full2.err"' "stdout on a full disk fails ($(cat "$T/full2.err"))"
echo hi | "$GEN" --model "$MODEL" --chat --temperature 0 --max-new-tokens 4 > /dev/full 2> "$T/full3.err"; rc=$?
check '[ $rc -ne 0 ] && grep -q "standard output: write failed" "$T/full3.err"' "--chat on a full stdout fails ($(cat "$T/full3.err"))"

finish
