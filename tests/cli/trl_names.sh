#!/usr/bin/env bash
# TRL's TrainingArguments names on a real program (sft_run on the tiny Qwen2
# fixture): the names on the command line (with '_' or '-') and as --config
# keys, the AdamW betas/epsilon reaching the optimizer, --save_total_limit
# keeping the newest step checkpoints, the metrics TRL logs
# (learning_rate, mean_token_accuracy), and the nearest flag for a typo.
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
# a TRL-style config: TrainingArguments keys only
cat > "$T/trl.json" <<J
{"learning_rate": 1e-2, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
 "max_steps": 8, "save_steps": 2, "save_total_limit": 2, "logging_steps": 1, "lr_scheduler_type": "constant_with_warmup",
 "warmup_steps": 0, "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": 42, "output_dir": "$T/a.ckpt"}
J
"$BIN/sft_run" --model "$MODEL" --data "$T/sft.jsonl" --max-length 64 --config "$T/trl.json" --metrics "$T/a.jsonl" 2>"$T/a.err"; rc=$?
check "sft_run takes a TRL config ($(tail -1 "$T/a.err"))" "[ $rc -eq 0 ] && [ -f $T/a.ckpt ]"
check "8 steps logged" "[ \$(wc -l < $T/a.jsonl) -eq 8 ]"
check "--logging_steps 1 prints every step off a terminal" "[ \$(grep -c '^sft_run: step [0-9]*/8' $T/a.err) -eq 8 ]"
check "learning_rate logged, equal to lr, constant" "python3 - $T/a.jsonl <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
sys.exit(0 if all(r['learning_rate'] == r['lr'] and abs(r['lr'] - 1e-2) < 1e-9 for r in rows) else 1)
PY"
check "mean_token_accuracy logged in [0, 1] and rising as the loss falls" "python3 - $T/a.jsonl <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
acc = [r['mean_token_accuracy'] for r in rows]
ok = all(0 <= a <= 1 for a in acc) and acc[-1] > acc[0] and rows[-1]['loss'] < rows[0]['loss']
sys.exit(0 if ok else 1)
PY"
check "--save_total_limit 2 keeps the newest two step checkpoints" "[ ! -e $T/a-step2.ckpt ] && [ -f $T/a-step4.ckpt ] && [ -f $T/a-step6.ckpt ]"

# the command line: TRL's names with '_' and with '-', overriding the config
"$BIN/sft_run" --model "$MODEL" --data "$T/sft.jsonl" --max-length 64 --config "$T/trl.json" --max_steps 3 --save-total-limit 0 \
    --learning-rate 1e-2 --output_dir "$T/b.ckpt" --metrics "$T/b.jsonl" 2>"$T/b.err"; rc=$?
check "TRL names on the command line ($(tail -1 "$T/b.err"))" "[ $rc -eq 0 ] && [ -f $T/b.ckpt ] && [ \$(wc -l < $T/b.jsonl) -eq 3 ]"
# the AdamW epsilon reaches the optimizer: a huge one shrinks the first update, so the second loss differs
"$BIN/sft_run" --model "$MODEL" --data "$T/sft.jsonl" --max-length 64 --config "$T/trl.json" --max_steps 2 \
    --adam_epsilon 10 --output_dir "$T/c.ckpt" --metrics "$T/c.jsonl" 2>"$T/c.err"; rc=$?
check "--adam_epsilon changes training" "[ $rc -eq 0 ] && [ \"\$(sed -n 1p $T/b.jsonl | cut -d, -f3)\" = \"\$(sed -n 1p $T/c.jsonl | cut -d, -f3)\" ] && [ \"\$(sed -n 2p $T/b.jsonl | cut -d, -f3)\" != \"\$(sed -n 2p $T/c.jsonl | cut -d, -f3)\" ]"
"$BIN/sft_run" --model "$MODEL" --data "$T/sft.jsonl" --max-length 64 --config "$T/trl.json" --max_steps 3 \
    --adam_beta2 0.5 --output_dir "$T/d.ckpt" --metrics "$T/d.jsonl" 2>"$T/d.err"; rc=$?
check "--adam_beta2 changes training" "[ $rc -eq 0 ] && [ \"\$(sed -n 3p $T/b.jsonl | cut -d, -f3)\" != \"\$(sed -n 3p $T/d.jsonl | cut -d, -f3)\" ]"
"$BIN/sft_run" --model "$MODEL" --data "$T/sft.jsonl" --out "$T/e.ckpt" --adam_beta1 1 2>"$T/e.err"; rc=$?
check "--adam_beta1 1 refused ($(cat "$T/e.err"))" "[ $rc -eq 2 ] && grep -q -- '--adam-beta1' $T/e.err"

# typos name the nearest flag
"$BIN/sft_run" --model "$MODEL" --data "$T/sft.jsonl" --out "$T/f.ckpt" --lerning-rate 1e-3 2>"$T/f.err"; rc=$?
check "a typo names the nearest flag ($(cat "$T/f.err"))" "[ $rc -eq 2 ] && grep -q 'unknown flag --lerning-rate; did you mean --lr?' $T/f.err"
echo '{"gradient_acumulation_steps": 2}' > "$T/typo.json"
"$BIN/sft_run" --model "$MODEL" --data "$T/sft.jsonl" --out "$T/f.ckpt" --config "$T/typo.json" 2>"$T/g.err"; rc=$?
check "a config typo names the nearest key ($(cat "$T/g.err"))" "[ $rc -eq 2 ] && grep -q 'did you mean \"grad-accum\"' $T/g.err"
"$BIN/sft_run" --help > "$T/help"
check "--help shows TRL's names" "grep -q 'TRL: learning_rate' $T/help && grep -q -- '--save-total-limit' $T/help"

finish
