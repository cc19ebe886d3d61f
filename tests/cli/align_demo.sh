#!/usr/bin/env bash
# The README's main job: align_demo trains a model from scratch (SFT), runs
# DPO (and KTO, on the same labels unpaired) towards calm answers, and
# must show the preference learned on
# held-out topics: rewards/accuracies >= 0.9 and fewer shouted answers
# (align_demo exits non-zero otherwise); every step's command is printed.
# Its RL-with-a-verifier stage (GRPO on "N+1=", --reward math, no reward
# model) must raise pass@1 on held-out numbers, as measured by ppo_run's
# --eval-data before training and at the end.
set -u
BIN=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

"$BIN/align_demo" --out-dir "$T/demo" > "$T/out" 2>&1
rc=$?
check "align_demo exits 0 (preference learned)" "[ $rc -eq 0 ]"
for cmd in model_init sft_run logprobs generate dpo_run kto_run align_report; do
  check "prints the $cmd command" "grep -q '^\\\$ $cmd ' $T/out"
done
acc=$(sed -n 's/^held-out pairs (topics DPO never saw): rewards\/accuracies \([0-9.]*\)$/\1/p' "$T/out")
check "held-out rewards/accuracies >= 0.9 (got '$acc')" "python3 -c 'import sys; sys.exit(0 if float(\"$acc\" or 0) >= 0.9 else 1)'"
check "prints the GRPO command with the math verifier" "grep -q '^\\\$ ppo_run .*--advantage grpo --reward math ' $T/out"
line=$(grep '^held-out "N+1="' "$T/out")
check "the GRPO stage prints held-out pass@1 before and after ('$line')" "[ -n \"\$line\" ]"
check "held-out pass@1 rises by 0.05 or more under GRPO" "python3 - \"\$line\" <<'PY'
import re, sys
m = re.search(r'SFT ([0-9.]+) -> GRPO ([0-9.]+)', sys.argv[1])
sys.exit(0 if m and float(m.group(2)) >= float(m.group(1)) + 0.05 else 1)
PY"
check "GRPO evaluated held-out pass@1 before training and at its end, from its metrics" "python3 - $T/demo/grpo_metrics.jsonl <<'PY'
import json, sys
ev = [r for r in map(json.loads, open(sys.argv[1])) if 'eval_pass@1' in r]
tr = [r for r in map(json.loads, open(sys.argv[1])) if 'rewards/math/mean' in r]
sys.exit(0 if ev and ev[0]['step'] == 0 and ev[-1]['step'] == len(tr) and len(tr) > 0 else 1)
PY"
check "the DPO model exists" "[ -s $T/demo/dpo.ckpt ]"
check "the report page exists" "[ -s $T/demo/report.html ] && grep -q 'samples_ppo' $T/demo/report.html"
check "DPO and PPO TensorBoard events exist" "ls $T/demo/dpo-logs/events.out.tfevents.* $T/demo/ppo-logs/events.out.tfevents.* >/dev/null"
kacc=$(sed -n 's/^the same held-out pairs after KTO on the same labels, unpaired: rewards\/accuracies \([0-9.]*\)$/\1/p' "$T/out")
check "KTO's held-out rewards/accuracies shown beside DPO's (got '$kacc')" "python3 -c 'import sys; sys.exit(0 if 0 <= float(\"$kacc\" or -1) <= 1 else 1)'"
[ $fail -eq 0 ] || tail -30 "$T/out"
finish
