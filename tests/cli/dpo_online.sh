#!/usr/bin/env bash
# Online DPO (dpo_run --online) end to end on the tiny Qwen2 fixture:
#  - a reward model (rm_train, a few steps) judges the policy's samples in
#    process: TRL's online metrics are logged, every judged pair lands in
#    --online-data with the chosen scoring above the rejected;
#  - --resume from a periodic checkpoint samples and trains exactly as the
#    unbroken run (the draws are keyed by the micro-step);
#  - a reward_server through --reward-connect gives the same run;
#  - --eval-data (offline pairs) reports held-out preference accuracy;
#  - --rounds 2 (iterative DPO) samples and judges every prompt per round,
#    keeps each round's pairs, model and metrics, and trains on them;
#  - flags that do not fit get one clear error.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../fixtures/hf_tiny_qwen2
T=$(mktemp -d)
SP=
trap '[ -n "$SP" ] && kill $SP 2>/dev/null; rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

python3 - "$T/pairs.jsonl" "$T/prompts.jsonl" <<'PY'
import json, sys
topics = ["rain", "tea", "cats", "maps", "bread", "jazz", "snow", "boats"]
with open(sys.argv[1], "w") as g, open(sys.argv[2], "w") as p:
    for t in topics:
        g.write(json.dumps({"prompt": "tell me about " + t, "chosen": " %s is calm." % t,
                            "rejected": " %s IS LOUD!!!" % t.upper()}) + "\n")
        p.write(json.dumps({"prompt": [{"role": "user", "content": "tell me about " + t}]}) + "\n")
PY
"$BIN/rm_train" "$T/pairs.jsonl" --model "$MODEL" --out "$T/rm.ckpt" --max-steps 10 --lr 1e-2 --batch-size 4 2>"$T/rm.err"
check "reward model trained" "[ -f $T/rm.ckpt ]"

common=(--policy "$MODEL" --data "$T/prompts.jsonl" --online --max-new-tokens 10 --batch-size 4 --lr 1e-2 --seed 5)
"$BIN/dpo_run" "${common[@]}" --reward "$T/rm.ckpt" --max-steps 4 --save-every 2 --out "$T/a.ckpt" \
    --metrics "$T/a.jsonl" --online-data "$T/a-pairs.jsonl" --eval-data "$T/pairs.jsonl" --eval-every 4 2>"$T/a.err"
check "online run exits 0" "[ $? -eq 0 ]"
check "online metrics and judged pairs" "python3 - $T/a.jsonl $T/a-pairs.jsonl <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
train = [r for r in rows if 'loss' in r]
assert len(train) == 4, len(train)
for k in ['objective/scores', 'objective/scores_margin', 'val/contain_eos_token', 'rewards/accuracies', 'logps/chosen']:
    assert all(k in r for r in train), k
assert 'eval_rewards/accuracies' in rows[-1], rows[-1]
pairs = [json.loads(l) for l in open(sys.argv[2], encoding='utf-8', errors='replace')]
assert len(pairs) == int(round(sum(r['online/pairs'] for r in train))), (len(pairs), [r['online/pairs'] for r in train])
assert all(p['score_chosen'] > p['score_rejected'] for p in pairs)
assert all(p['chosen'] != p['rejected'] for p in pairs)
assert {p['step'] for p in pairs} <= {1, 2, 3, 4}
PY"

"$BIN/dpo_run" "${common[@]}" --reward "$T/rm.ckpt" --max-steps 4 --out "$T/b.ckpt" --metrics "$T/b.jsonl" \
    --resume "$T/a-step2.ckpt" 2>"$T/b.err"
check "resume exits 0" "[ $? -eq 0 ]"
check "resumed steps sample and train as the unbroken run" \
    "diff <(grep '\"loss\"' $T/a.jsonl | grep '\"step\": [34],' | cut -d, -f1-9) <(cut -d, -f1-9 $T/b.jsonl)"

"$BIN/reward_server" --model "$T/rm.ckpt" --bind "ipc://$T/rm.sock" 2>"$T/srv.err" &
SP=$!
timeout 120 "$BIN/dpo_run" "${common[@]}" --reward-connect "ipc://$T/rm.sock" --max-steps 2 --out "$T/c.ckpt" \
    --metrics "$T/c.jsonl" 2>"$T/c.err"
check "--reward-connect run exits 0" "[ $? -eq 0 ]"
kill $SP; wait $SP 2>/dev/null; SP=
check "reward_server judges as the in-process model" "python3 - $T/a.jsonl $T/c.jsonl <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1]) if '\"loss\"' in l][:2]
c = [json.loads(l) for l in open(sys.argv[2])]
for x, y in zip(a, c):
    for k in ('objective/scores', 'loss', 'online/pairs'):
        assert abs(x[k] - y[k]) <= 1e-4 * max(1, abs(x[k])), (k, x[k], y[k])
PY"

# ---- iterative DPO: 2 rounds, each round's pairs kept on disk
"$BIN/dpo_run" "${common[@]}" --reward "$T/rm.ckpt" --rounds 2 --epochs 1 --out "$T/it.ckpt" --metrics "$T/it.jsonl" \
    2>"$T/it.err"
check "--rounds exits 0" "[ $? -eq 0 ]"
check "each round's pairs, model and metrics kept" \
    "[ -s $T/it-round1.pairs.jsonl ] && [ -s $T/it-round2.pairs.jsonl ] && [ -f $T/it-round1.ckpt ] && [ -f $T/it.ckpt ] && [ -s $T/it-round1.jsonl ] && [ -s $T/it-round2.jsonl ]"
check "rounds judged the whole prompt set, then trained on it" "python3 - $T <<'PY'
import json, sys
d = sys.argv[1]
for r in (1, 2):
    pairs = [json.loads(l) for l in open('%s/it-round%d.pairs.jsonl' % (d, r), encoding='utf-8', errors='replace')]
    assert pairs and all(p['round'] == r and p['score_chosen'] > p['score_rejected'] for p in pairs), r
    steps = [json.loads(l) for l in open('%s/it-round%d.jsonl' % (d, r))]
    assert len(steps) == (len(pairs) + 3) // 4, (r, len(steps), len(pairs))  # one epoch of batch 4
    assert 'rewards/accuracies' in steps[-1]
r1 = [json.loads(l)['chosen'] for l in open(d + '/it-round1.pairs.jsonl', encoding='utf-8', errors='replace')]
r2 = [json.loads(l)['chosen'] for l in open(d + '/it-round2.pairs.jsonl', encoding='utf-8', errors='replace')]
assert r1 != r2
PY"
check "rounds reported" "grep -q 'round 2: 8 prompts -> ' $T/it.err"

bad() { # name, expected text, args...
  local name=$1 want=$2; shift 2
  "$@" 2>"$T/e" >/dev/null
  local rc=$?
  check "$name exits 2 (got $rc)" "[ $rc -eq 2 ]"
  check "$name: says '$want'" "grep -qF -- '$want' $T/e"
}
bad "no judge" "--online needs one judge" "$BIN/dpo_run" "${common[@]}" --out "$T/x.ckpt"
bad "two judges" "--online needs one judge" "$BIN/dpo_run" "${common[@]}" --out "$T/x.ckpt" --reward a --reward-connect b
bad "one sample" "--n 1: online DPO needs at least 2" "$BIN/dpo_run" "${common[@]}" --reward a --out "$T/x.ckpt" --n 1
bad "kto online" "--online trains a pairwise loss" "$BIN/dpo_run" "${common[@]}" --reward a --out "$T/x.ckpt" --loss kto
bad "rounds and resume" "--resume continues one training run, not --rounds" \
    "$BIN/dpo_run" "${common[@]}" --reward a --out "$T/x.ckpt" --rounds 2 --resume "$T/a-step2.ckpt"
bad "sampling flag offline" "--temperature applies to --online only" \
    "$BIN/dpo_run" --policy "$MODEL" --data "$T/pairs.jsonl" --out "$T/x.ckpt" --temperature 0.7
"$BIN/dpo_run" "${common[@]}" --reward "$MODEL" --out "$T/x.ckpt" 2>"$T/e"
check "a policy as the judge is refused" "grep -q 'is not a reward model' $T/e"

finish
