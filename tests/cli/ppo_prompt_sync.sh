#!/usr/bin/env bash
# ppo_run with prompt tuning and prefix tuning (--peft prompt|prefix), end
# to end on a tiny model (dim 32, 2 layers, byte tokenizer) with two
# rollout workers, --ppo-epochs 1 and one minibatch, as ppo_lora_sync.sh:
# policy/approxkl_avg ~1e-13 only when the workers generate (through their
# KV cache, virtual tokens first in every slot) with exactly the policy's
# virtual tokens.
#  - prompt, prefix and projected prefix (--prefix-projection): only the
#    virtual tokens travel (weight_sync/bytes = their size), the
#    reference (the base, virtual tokens off) is not the policy,
#    the .ckpt and the peft adapter are written;
#  - --resume from the iteration-2 checkpoint: the unbroken run's metrics
#    and bit-identical final weights;
#  - a directory --out is refused with a sentence.
set -u
BIN=$1
T=$(mktemp -d); [ -n "${KEEP:-}" ] && echo "keeping $T"
trap '[ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/ppo.sh"

ppo_data "$T" 0 32
"$BIN/model_init" --dim 32 --layers 2 --heads 2 --tokenizer byte --out "$T/init.ckpt" 2>/dev/null
"$BIN/rm_train" "$T/prefs.jsonl" --model "$T/init.ckpt" --out "$T/rm.ckpt" --lr 1e-2 --batch-size 16 --max-steps 2 2>/dev/null
check "tiny policy and reward models" "[ -s $T/init.ckpt ] && [ -s $T/rm.ckpt ]"

common=(--policy "$T/init.ckpt" --reward "$T/rm.ckpt" --prompts "$T/prompts.jsonl" --batch-size 8 --n 2
        --max-new-tokens 12 --lr 1e-2 --seed 3 --ppo-epochs 1 --rollout-workers 2 --num-virtual-tokens 5)
# every iteration: approxkl below 1e-8 and $2 bytes on the wire
synced() { python3 - "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
kl = [r['policy/approxkl_avg'] for r in rows]
b = [r['weight_sync/bytes'] for r in rows]
print('approxkl', ' '.join('%.1e' % x for x in kl), ' bytes', b[0])
sys.exit(0 if rows and all(x < 1e-8 for x in kl) and all(x == int(sys.argv[2]) for x in b) else 1)
PY
}

# prompt tuning: 5 x 32 floats; prefix tuning: 5 x (2 layers x k,v x 32) floats; projected: the
# embedding 5 x 32, Linear 32 -> 32 and Linear 32 -> 128 with their biases
for run in "prompt 640 prompt" "prefix 2560 prefix" "prefix 21760 projected --prefix-projection"; do
    set -- $run
    kind=$1 bytes=$2 name=$3 extra=${4:-}
    timeout 120 "$BIN/ppo_run" "${common[@]}" --peft $kind $extra --max-steps 4 --save-every 2 --out "$T/$name.ckpt" \
        --metrics "$T/$name.jsonl" 2>"$T/$name.err"
    check "$name: the run exits 0" "[ $? -eq 0 ]"
    check "$name: it says only the virtual tokens travel" "grep -q 'weight sync: virtual tokens only' $T/$name.err"
    check "$name: rollouts use the policy's virtual tokens (approxkl < 1e-8), $bytes bytes on the wire" "synced $T/$name.jsonl $bytes"
    check "$name: the reference is not the policy (the base, virtual tokens off)" "python3 -c \"
import json, sys
kl = [json.loads(l)['objective/kl'] for l in open('$T/$name.jsonl')]
sys.exit(0 if max(abs(x) for x in kl) > 1e-4 else 1)\""
    check "$name: .ckpt and peft adapter written" "[ -s $T/$name.ckpt ] && grep -q '$(echo $kind | tr a-z A-Z)_TUNING' $T/$name-adapter/adapter_config.json"
done

timeout 120 "$BIN/ppo_run" "${common[@]}" --peft prefix --max-steps 4 --out "$T/b.ckpt" --metrics "$T/b.jsonl" \
    --resume "$T/prefix-step2.ckpt" 2>"$T/b.err"
check "prefix resume exits 0" "[ $? -eq 0 ]"
check "resumed metrics equal the unbroken run's" "diff <(nontime $T/prefix.jsonl | tail -2) <(nontime $T/b.jsonl)"
check "resumed weights bit-identical" "[ \"\$(data $T/prefix.ckpt)\" = \"\$(data $T/b.ckpt)\" ]"

timeout 60 "$BIN/ppo_run" "${common[@]}" --peft prompt --max-steps 1 --out "$T/dir" 2>"$T/e1"
check "a directory --out refused" "[ $? -ne 0 ] && grep -q 'goes to a .ckpt' $T/e1"

finish
