#!/usr/bin/env bash
# --report-to tensorboard end to end on the tiny Qwen2 fixture:
#  - dpo_run writes an event file under <out>-logs (or --logging-dir) and
#    says where; a bad --report-to is one clear error, exit 2 or 1;
#  - ppo_run (a tiny byte-level policy and reward model) does the same, and
#    writes <out>-report.html next to its --out;
#  - tensorboard's own event reader (tests/tb_read.py) reads every scalar
#    of the --metrics JSONL back, same tag, same step, same value. That
#    part needs the tensorboard package: the python of ALIGN_TB_PYTHON, a
#    .venv*/ at the repository root, or python3, whichever imports it;
#    without one the test exits 77 (skipped) after the other checks.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MODEL=$HERE/../fixtures/hf_tiny_qwen2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$HERE/lib/ppo.sh" # check, the counters and the PPO data sets

python3 - "$T" <<'PY'
import json, sys
qa = [("what is two plus two", "four", "five"), ("name a color", "blue", "dog"), ("say hi", "hi there", "go away")]
with open(sys.argv[1] + "/prefs.jsonl", "w") as f:
    for i in range(24):
        q, c, r = qa[i % 3]
        f.write(json.dumps({"prompt": q, "chosen": c, "rejected": r}) + "\n")
PY
common=(--policy "$MODEL" --data "$T/prefs.jsonl" --eval-data "$T/prefs.jsonl" --eval-every 3 --lr 1e-2 --batch-size 4 --max-steps 6)

"$BIN/dpo_run" "${common[@]}" --out "$T/a.ckpt" --metrics "$T/a.jsonl" --report-to tensorboard 2>"$T/a.err"
check "dpo_run --report-to tensorboard exits 0" "[ $? -eq 0 ]"
check "one event file in <out>-logs" "[ \$(ls $T/a-logs/events.out.tfevents.* 2>/dev/null | wc -l) -eq 1 ]"
check "it says where the events go" "grep -q 'TensorBoard events in $T/a-logs/events.out.tfevents' $T/a.err"
"$BIN/dpo_run" "${common[@]}" --max-steps 2 --out "$T/b.ckpt" --report-to tensorboard --logging-dir "$T/tb/b" 2>"$T/b.err"
check "--logging-dir is used (parents made)" "ls $T/tb/b/events.out.tfevents.* >/dev/null 2>&1 && [ ! -e $T/b-logs ]"
"$BIN/dpo_run" "${common[@]}" --out "$T/c.ckpt" --report-to wandb 2>"$T/c.err"
rc=$?
check "--report-to wandb refused (rc $rc): $(head -1 "$T/c.err")" "[ $rc -ne 0 ] && grep -q -- '--report-to wandb' $T/c.err && [ ! -e $T/c.ckpt ]"
"$BIN/dpo_run" "${common[@]}" --max-steps 1 --out "$T/d.ckpt" 2>"$T/d.err"
check "no --report-to: no event files" "[ ! -e $T/d-logs ]"

# PPO: tiny models made here (dim 32, byte tokenizer), 4 iterations
mkdir -p "$T/ppo"
ppo_data "$T/ppo" 64 64
"$BIN/model_init" --dim 32 --layers 2 --heads 2 --tokenizer byte --out "$T/ppo/init.ckpt" 2>/dev/null
"$BIN/sft_run" --model "$T/ppo/init.ckpt" --data "$T/ppo/sft.jsonl" --out "$T/ppo/sft.ckpt" --lr 1e-2 --batch-size 16 --max-steps 10 2>/dev/null
"$BIN/rm_train" "$T/ppo/prefs.jsonl" --model "$T/ppo/init.ckpt" --out "$T/ppo/rm.ckpt" --lr 1e-2 --batch-size 16 --max-steps 10 2>/dev/null
timeout 300 "$BIN/ppo_run" --policy "$T/ppo/sft.ckpt" --reward "$T/ppo/rm.ckpt" --prompts "$T/ppo/prompts.jsonl" --batch-size 8 --n 2 \
    --max-new-tokens 8 --max-steps 4 --rollout-workers 1 --out "$T/ppo/ppo.ckpt" --metrics "$T/ppo/ppo.jsonl" \
    --report-to tensorboard 2>"$T/ppo.err"
check "ppo_run --report-to tensorboard exits 0" "[ $? -eq 0 ]"
check "ppo_run: one event file in <out>-logs" "[ \$(ls $T/ppo/ppo-logs/events.out.tfevents.* 2>/dev/null | wc -l) -eq 1 ]"
check "ppo_run: <out>-report.html written" "[ -s $T/ppo/ppo-report.html ] && grep -q 'wrote $T/ppo/ppo-report.html' $T/ppo.err"

py=""
for cand in ${ALIGN_TB_PYTHON:-} "$ROOT"/.venv*/bin/python python3; do
    if [ -x "$(command -v "$cand" 2>/dev/null)" ] && "$cand" -c 'import tensorboard' 2>/dev/null; then py=$cand; break; fi
done
echo "$pass passed, $fail failed (without tensorboard's reader)"
[ "$fail" -eq 0 ] || exit 1
if [ -z "$py" ]; then
    echo "skipped: no python with the tensorboard package (set ALIGN_TB_PYTHON or make a .venv with it)"
    exit 77
fi
"$py" "$HERE/../tb_read.py" "$T/a-logs" "$T/a.jsonl"
check "tensorboard's reader finds every dpo_run JSONL scalar" "[ $? -eq 0 ]"
"$py" "$HERE/../tb_read.py" "$T/ppo/ppo-logs" "$T/ppo/ppo.jsonl"
check "tensorboard's reader finds every ppo_run JSONL scalar" "[ $? -eq 0 ]"
finish
