#!/usr/bin/env bash
# The adapters align trains, loaded by the `peft` library itself: sft_run
# trains DoRA (dropout on) and IA3 for 2 steps on the tiny Qwen2 and GPT-2,
# then tests/fixtures/make_dora_ia3_fixtures.py --check loads each adapter
# directory with PeftModel.from_pretrained and compares its logits with
# transformers on align's merged export and with peft's merge_and_unload
# (1e-4), and that the adapter changed the logits at all. Needs torch,
# transformers and peft: the python of ALIGN_PEFT_PYTHON, a .venv*/ at the
# repository root, or python3, whichever imports them; without one the test
# exits 77 (skipped).
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

py=""
for cand in ${ALIGN_PEFT_PYTHON:-} "$ROOT"/.venv*/bin/python python3; do
    if [ -x "$(command -v "$cand" 2>/dev/null)" ] && "$cand" -c 'import torch, transformers, peft' 2>/dev/null; then py=$cand; break; fi
done
if [ -z "$py" ]; then
    echo "skipped: no python with torch, transformers and peft (set ALIGN_PEFT_PYTHON or make a .venv with them)"
    exit 77
fi

python3 - "$T/sft.jsonl" <<'PY'
import json, sys
qa = [("what is two plus two", "four"), ("name a color", "blue"), ("say hi", "hi there"), ("123", "456")]
with open(sys.argv[1], "w") as f:
    for q, a in qa:
        f.write(json.dumps({"prompt": q, "completion": a}) + "\n")
PY
for arch in qwen2 gpt2; do
    base=$HERE/../fixtures/hf_tiny_$arch
    for m in dora ia3; do
        extra=(--peft "$m"); [ "$m" = dora ] && extra+=(--lora-rank 4 --lora-alpha 8 --lora-dropout 0.1)
        "$BIN/sft_run" --model "$base" --data "$T/sft.jsonl" --lr 0.05 --max-steps 2 --batch-size 2 \
            --chat-template none "${extra[@]}" --out "$T/${m}_$arch" --lora-out "$T/${m}_$arch-adapter" 2>"$T/err"
        check "sft_run --peft $m on $arch exits 0" "[ $? -eq 0 ]"
        OMP_NUM_THREADS=1 "$py" "$HERE/../fixtures/make_dora_ia3_fixtures.py" --check "$base" "$T/${m}_$arch-adapter" \
            "$T/${m}_$arch" >"$T/out" 2>"$T/py.err"
        rc=$?
        grep '^{' "$T/out"
        check "peft loads align's $m adapter on $arch: logits equal align's merged model and peft's merge" "[ $rc -eq 0 ]"
    done
done
finish
