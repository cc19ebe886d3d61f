#!/usr/bin/env bash
# KTO end to end on the tiny Qwen2 fixture:
#  - kto_run trains on thumbs-up/down records {prompt, completion, label}
#    (strings and message lists mixed): the loss falls, the desirable
#    completions' reward rises above the undesirable ones', and TRL's
#    metric names are logged (kl, rewards/*, logps/*), eval ones too, and
#    held-out pairs also give DPO's rewards/accuracies;
#  - dpo_run --loss kto is the same run;
#  - a paired preference file is split into one desirable and one
#    undesirable example per pair;
#  - flags that do not fit KTO and bad labels get one clear error.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../fixtures/hf_tiny_qwen2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

python3 - "$T" <<'PY'
import json, sys
d = sys.argv[1]
topics = ["rain", "tea", "cats", "maps", "bread", "jazz", "snow", "boats"]
with open(d + "/kto.jsonl", "w") as f, open(d + "/pairs.jsonl", "w") as g:
    for t in topics:
        calm, loud = " %s is calm and nice." % t, " %s IS LOUD!!!" % t.upper()
        f.write(json.dumps({"prompt": "tell me about " + t, "completion": calm, "label": True}) + "\n")
        f.write(json.dumps({"prompt": [{"role": "user", "content": "tell me about " + t}],
                            "completion": [{"role": "assistant", "content": loud}], "label": False}) + "\n")
        g.write(json.dumps({"prompt": "tell me about " + t, "chosen": calm, "rejected": loud}) + "\n")
PY
common=(--policy "$MODEL" --data "$T/kto.jsonl" --lr 5e-3 --batch-size 4 --max-length 64 --seed 3)

"$BIN/kto_run" "${common[@]}" --max-steps 12 --out "$T/a.ckpt" --metrics "$T/a.jsonl" \
    --eval-data "$T/pairs.jsonl" --eval-every 12 2>"$T/a.err"
check "kto_run exits 0" "[ $? -eq 0 ]"
check "labels counted" "grep -q 'KTO on 8 desirable and 8 undesirable examples' $T/a.err"
check "metrics under TRL's names, kl not negative, loss and margin move" "python3 - $T/a.jsonl <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
train = [r for r in rows if 'loss' in r]
ev = [r for r in rows if 'eval_loss' in r]
for k in ['kl', 'rewards/chosen', 'rewards/rejected', 'logps/chosen', 'logps/rejected', 'rewards/margins']:
    assert any(k in r for r in train), k
    assert 'eval_' + k in ev[-1], 'eval_' + k
assert all(r['kl'] >= 0 for r in train)
assert train[-1]['loss'] < 0.8 * train[0]['loss'], (train[0]['loss'], train[-1]['loss'])
assert ev[-1]['eval_rewards/margins'] > 0, ev[-1]
assert 0 <= ev[-1]['eval_rewards/accuracies'] <= 1, ev[-1]  # paired eval data: DPO's accuracy too
PY"

"$BIN/dpo_run" "${common[@]}" --loss kto --max-steps 2 --out "$T/b.ckpt" --metrics "$T/b.jsonl" 2>/dev/null
"$BIN/kto_run" "${common[@]}" --max-steps 2 --out "$T/c.ckpt" --metrics "$T/c.jsonl" 2>/dev/null
check "dpo_run --loss kto = kto_run (metrics and weights)" "diff <(cut -d, -f1-11 $T/b.jsonl) <(cut -d, -f1-11 $T/c.jsonl) >/dev/null && python3 - $T/b.ckpt $T/c.ckpt <<'PY'
import struct, sys
def data(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; return b[8 + n:]
sys.exit(0 if data(sys.argv[1]) == data(sys.argv[2]) else 1)
PY"

"$BIN/kto_run" --policy "$MODEL" --data "$T/pairs.jsonl" --batch-size 4 --max-steps 1 --out "$T/d.ckpt" 2>"$T/d.err"
check "paired file trains" "[ $? -eq 0 ]"
check "pairs split into both labels" "grep -q 'KTO on 8 desirable and 8 undesirable examples' $T/d.err"

"$BIN/kto_run" "${common[@]}" --max-steps 2 --lora-rank 4 --out "$T/l.ckpt" --metrics "$T/l.jsonl" 2>"$T/l.err"
check "LoRA: the reference is the base, adapters off" "[ -f $T/l.ckpt ] && grep -q 'reference = the base model' $T/l.err && grep -q '\"kl\"' $T/l.jsonl"

bad() { # name, expected text, args...
  local name=$1 want=$2; shift 2
  "$@" 2>"$T/e" >/dev/null
  local rc=$?
  check "$name exits 2 (got $rc)" "[ $rc -eq 2 ]"
  check "$name: says '$want'" "grep -qF -- '$want' $T/e"
}
bad "batch size 1" "--batch-size 1: KTO needs at least 2" "$BIN/kto_run" "${common[@]}" --out "$T/x.ckpt" --batch-size 1
bad "precompute-ref" "--precompute-ref does not apply to --loss kto" "$BIN/kto_run" "${common[@]}" --out "$T/x.ckpt" --precompute-ref
bad "weights without kto" "--desirable-weight and --undesirable-weight apply to --loss kto only" \
    "$BIN/dpo_run" "${common[@]}" --out "$T/x.ckpt" --desirable-weight 2
bad "negative weight" "--undesirable-weight" "$BIN/kto_run" "${common[@]}" --out "$T/x.ckpt" --undesirable-weight -1
bad "unknown loss" "expected sigmoid, robust, hinge, ipo, simpo, orpo or kto" "$BIN/dpo_run" "${common[@]}" --out "$T/x.ckpt" --loss nope

printf '{"prompt":"p","completion":"c","label":true}\n{"prompt":"p","completion":"d","label":"yes"}\n' >"$T/bad.jsonl"
"$BIN/kto_run" --policy "$MODEL" --data "$T/bad.jsonl" --out "$T/x.ckpt" 2>"$T/e"
check "bad label exits non-zero" "[ $? -ne 0 ]"
check "bad label names file:line" "grep -q 'bad.jsonl:2: field \"label\" must be true or false' $T/e"
"$BIN/dpo_run" --policy "$MODEL" --data "$T/kto.jsonl" --out "$T/x.ckpt" 2>"$T/e"
check "DPO on unpaired data points at KTO" "grep -q 'is KTO data (--loss kto)' $T/e"
# prompt and prefix tuning put virtual rows before every sequence: KTO takes
# its separate forward-only KL pass there (kto_batch.c)
for v in prompt prefix; do
    "$BIN/kto_run" --policy "$MODEL" --data "$T/kto.jsonl" --peft $v --num-virtual-tokens 4 --batch-size 4 --max-steps 2 \
        --out "$T/$v.ckpt" 2>"$T/$v.err"
    check "kto_run --peft $v trains ($(tail -1 "$T/$v.err"))" "[ $? -eq 0 ] && [ -s $T/$v.ckpt ]"
done

finish
