#!/usr/bin/env bash
# logprobs on a TRL-style preference file gives the numbers PyTorch +
# transformers give (fixtures/make_logprobs_fixture.py; 1e-4 relative),
# with token counts equal; dpo_run accepts its output as --ref-logprobs;
# bad input gets one clear error.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
FX=$HERE/../fixtures
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

"$BIN/logprobs" --model "$FX/hf_tiny_qwen2" --data "$FX/logprobs/prefs.jsonl" --out "$T/lp.jsonl" 2>"$T/err"
check "logprobs exits 0" "[ $? -eq 0 ]"
check "numbers equal PyTorch's" "python3 - $T/lp.jsonl $FX/logprobs/expected.jsonl <<'PY'
import json, sys
got = [json.loads(l) for l in open(sys.argv[1])]
want = [json.loads(l) for l in open(sys.argv[2])]
assert len(got) == len(want), (len(got), len(want))
for g, w in zip(got, want):
    for side in ('chosen', 'rejected'):
        assert g[side + '_tokens'] == w[side + '_tokens'], (g, w)
        a, b = g[side + '_logp'], w[side + '_logp']
        assert abs(a - b) <= 1e-4 * abs(b), (side, a, b)
PY"
"$BIN/dpo_run" --policy "$FX/hf_tiny_qwen2" --data "$FX/logprobs/prefs.jsonl" --ref-logprobs "$T/lp.jsonl" \
  --max-steps 1 --batch-size 3 --out "$T/o.ckpt" 2>"$T/dpo.err"
check "dpo_run takes them as --ref-logprobs" "[ $? -eq 0 ]"
head -2 "$T/lp.jsonl" > "$T/short.jsonl"
"$BIN/dpo_run" --policy "$FX/hf_tiny_qwen2" --data "$FX/logprobs/prefs.jsonl" --ref-logprobs "$T/short.jsonl" \
  --max-steps 1 --out "$T/o.ckpt" 2>"$T/e1"
check "a reference file of the wrong length is refused" "[ $? -ne 0 ] && grep -q 'has 2 records but the training data has 3' $T/e1"

printf '{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n' > "$T/bad.jsonl"
"$BIN/logprobs" --model "$FX/hf_tiny_qwen2" --data "$T/bad.jsonl" > /dev/null 2>"$T/e2"
check "bad record: non-zero exit naming file:line" "[ $? -ne 0 ] && grep -q 'bad.jsonl:2' $T/e2"
"$BIN/logprobs" --model "$FX/hf_tiny_qwen2" --data "$T/none.jsonl" > /dev/null 2>"$T/e3"
check "missing data file named" "[ $? -ne 0 ] && grep -q none.jsonl $T/e3"

"$BIN/logprobs" --model "$FX/hf_tiny_qwen2" --data "$FX/logprobs/prefs.jsonl" --out /dev/full 2>"$T/e4"; rc=$?
check "a full disk is an error naming the file ($(tail -1 $T/e4))" "[ $rc -ne 0 ] && grep -q 'writing /dev/full failed (No space left on device)' $T/e4"

finish
