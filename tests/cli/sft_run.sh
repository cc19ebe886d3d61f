#!/usr/bin/env bash
# sft_run end to end on the tiny Qwen2 fixture:
#  - the loss falls on a small question/answer set;
#  - --resume from a periodic checkpoint gives bit-identical final weights
#    and the same per-step losses as the unbroken run;
#  - Ctrl-C (SIGINT) saves a checkpoint, exits 130, and resuming it ends
#    where the unbroken run ends;
#  - bad flags and bad records get one clear error and a non-zero exit.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../fixtures/hf_tiny_qwen2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

python3 - "$T/sft.jsonl" <<'PY'
import json, sys
qa = [("what is two plus two", "four"), ("name a color", "blue"), ("say hi", "hi there"),
      ("what is the capital of france", "paris"), ("count to three", "one two three")]
with open(sys.argv[1], "w") as f:
    for i in range(40):
        q, a = qa[i % 5]
        f.write(json.dumps({"question": q, "answer": a}) + "\n")
PY
common=(--model "$MODEL" --data "$T/sft.jsonl" --lr 1e-2 --batch-size 4 --max-length 64)

"$BIN/sft_run" "${common[@]}" --max-steps 20 --save-every 8 --out "$T/a.ckpt" --metrics "$T/a.jsonl" 2>"$T/a.err"
check "sft_run exits 0" "[ $? -eq 0 ]"
first=$(head -1 "$T/a.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["loss"])')
last=$(tail -1 "$T/a.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["loss"])')
check "loss falls ($first -> $last)" "python3 -c 'import sys; sys.exit(0 if $last < 0.7 * $first else 1)'"
check "periodic checkpoint kept" "[ -f $T/a-step16.ckpt ]"

"$BIN/sft_run" "${common[@]}" --max-steps 20 --out "$T/b.ckpt" --metrics "$T/b.jsonl" --resume "$T/a-step16.ckpt" 2>"$T/b.err"
check "resume exits 0" "[ $? -eq 0 ]"
check "resume says where it continues" "grep -q 'resuming from .* at step 16' $T/b.err"
check "resumed losses equal the unbroken run's" "diff <(tail -4 $T/a.jsonl | cut -d, -f1-3) <(cut -d, -f1-3 $T/b.jsonl)"
check "resumed weights bit-identical" "python3 - $T/a.ckpt $T/b.ckpt <<'PY'
import json, struct, sys
def data(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; return b[8 + n:]
sys.exit(0 if data(sys.argv[1]) == data(sys.argv[2]) else 1)
PY"

# Ctrl-C: interrupt, then resume to the end; compare with an unbroken run.
"$BIN/sft_run" "${common[@]}" --max-steps 3000 --out "$T/c.ckpt" 2>/dev/null
"$BIN/sft_run" "${common[@]}" --max-steps 3000 --out "$T/d.ckpt" 2>"$T/d.err" &
pid=$!
sleep 0.5
kill -INT $pid
wait $pid
rc=$?
if [ $rc -eq 130 ]; then
  ck=$(ls "$T"/d-step*.ckpt 2>/dev/null | head -1)
  check "SIGINT leaves a checkpoint" "[ -n '$ck' ]"
  check "SIGINT says how to resume" "grep -q 'continue with --resume' $T/d.err"
  "$BIN/sft_run" "${common[@]}" --max-steps 3000 --out "$T/d.ckpt" --resume "$ck" 2>/dev/null
  check "interrupted + resumed equals unbroken" "cmp -s <(tail -c 2000 $T/c.ckpt) <(tail -c 2000 $T/d.ckpt)"
else
  check "SIGINT exits 130 (got $rc)" "false"
fi

"$BIN/sft_run" "${common[@]}" --out "$T/x.ckpt" --lr fast 2>"$T/e1"
check "bad flag value exits non-zero" "[ $? -ne 0 ]"
check "bad flag value named" "grep -q -- '--lr' $T/e1"
printf '{"question": "q", "answer": "a"}\n{"question": 3}\n' > "$T/bad.jsonl"
"$BIN/sft_run" --model "$MODEL" --data "$T/bad.jsonl" --out "$T/x.ckpt" 2>"$T/e2"
check "bad record exits non-zero" "[ $? -ne 0 ]"
check "bad record names file:line" "grep -q 'bad.jsonl:2' $T/e2"
"$BIN/sft_run" --model "$MODEL" --data "$T/bad.jsonl" --out "$T/x.ckpt" --skip-bad --max-steps 1 2>"$T/e3"
check "--skip-bad skips and counts" "grep -q '1 bad records skipped' $T/e3"
"$BIN/sft_run" --model /nonexistent --data "$T/sft.jsonl" --out "$T/x.ckpt" 2>"$T/e4"
check "missing model named" "grep -q /nonexistent $T/e4"

finish
