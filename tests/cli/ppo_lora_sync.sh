#!/usr/bin/env bash
# ppo_run's weight sync to the rollout workers, end to end on a tiny model
# (dim 32, 2 layers, byte tokenizer), with --ppo-epochs 1 and one minibatch:
# the PPO ratio of that single minibatch compares the policy's recomputed
# log-probs with the rollout workers' old log-probs, so policy/approxkl_avg
# (0.5 mean (logp - old)^2) is ~1e-13 (float rounding) only when the workers
# sample from exactly the policy's weights. With the adapters not applied it
# is 1e-4 .. 4e-3 on this run (checked by hand), so the bound 1e-8 has teeth.
#  - LoRA (--lora-rank 4, dropout 0), two rollout workers: adapters only on
#    the wire (weight_sync/bytes = the adapters' size, far below the model),
#    approxkl ~0 every iteration while the policy moves away from the
#    reference (objective/kl grows), the merged model and the peft adapter
#    written;
#  - --resume from the iteration-3 LoRA checkpoint: the unbroken run's
#    metrics and bit-identical final weights;
#  - a rollout worker SIGKILLed mid-run: restarted, it loads the base itself
#    and gets the adapters before generating (approxkl stays ~0);
#  - full fine-tuning: every parameter on the wire, approxkl ~0;
#  - --quantize-base, and a LoRA checkpoint resumed without --lora-rank, are
#    refused with a sentence.
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
        --max-new-tokens 12 --lr 1e-2 --seed 3 --ppo-epochs 1 --rollout-workers 2)
lora=(--lora-rank 4 --lora-dropout 0)
# every iteration: approxkl below 1e-8 and the sync payload as expected ($2: lora or full)
synced() { python3 - "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
kl = [r['policy/approxkl_avg'] for r in rows]
b = [r['weight_sync/bytes'] for r in rows]
print('approxkl', ' '.join('%.1e' % x for x in kl), ' bytes', b[0])
ok = len(rows) > 0 and all(x < 1e-8 for x in kl)
# the model: 27k parameters (108 KB); rank-4 adapters on all 7 projections: 20 KB
ok = ok and (all(x == b[0] and 4096 < x < 30000 for x in b) if sys.argv[2] == 'lora' else all(x > 100000 for x in b))
sys.exit(0 if ok else 1)
PY
}

# ---- 1. LoRA, two rollout workers, 6 iterations, a checkpoint at 3
timeout 120 "$BIN/ppo_run" "${common[@]}" "${lora[@]}" --max-steps 6 --save-every 3 --out "$T/a.ckpt" \
    --metrics "$T/a.jsonl" 2>"$T/a.err"
check "LoRA run exits 0" "[ $? -eq 0 ]"
check "it says only the adapters travel" "grep -q 'weight sync: LoRA adapters only' $T/a.err"
check "rollout log-probs are the policy's (approxkl < 1e-8), adapters only on the wire" "synced $T/a.jsonl lora"
check "the policy moved away from the reference" "python3 -c \"
import json, sys
kl = [json.loads(l)['objective/kl'] for l in open('$T/a.jsonl')]
sys.exit(0 if max(kl[2:]) > 1e-3 else 1)\""
check "merged model and peft adapter written" "[ -s $T/a.ckpt ] && [ -s $T/a-adapter/adapter_model.safetensors ] && [ -s $T/a-adapter/adapter_config.json ]"

# ---- 2. --resume from the LoRA checkpoint at iteration 3
timeout 120 "$BIN/ppo_run" "${common[@]}" "${lora[@]}" --max-steps 6 --save-every 3 --out "$T/b.ckpt" \
    --metrics "$T/b.jsonl" --resume "$T/a-step3.ckpt" 2>"$T/b.err"
check "LoRA resume exits 0" "[ $? -eq 0 ]"
check "resumed metrics equal the unbroken run's" "diff <(nontime $T/a.jsonl | tail -3) <(nontime $T/b.jsonl)"
check "resumed weights bit-identical" "[ \"\$(data $T/a.ckpt)\" = \"\$(data $T/b.ckpt)\" ]"

# ---- 3. a rollout worker killed mid-run gets the adapters again
timeout 120 "$BIN/ppo_run" "${common[@]}" "${lora[@]}" --max-steps 40 --out "$T/f.ckpt" --metrics "$T/f.jsonl" \
    2>"$T/f.err" &
RP=$!
wait_lines "$T/f.jsonl" 5 && kill -9 "$(pid_of 'rollout worker 1' "$T/f.err")"
wait $RP
check "the faulted LoRA run completes" "[ $? -eq 0 ] && [ \$(wc -l <$T/f.jsonl) -eq 40 ]"
check "the worker was restarted" "grep -q 'rollout worker 1 .* is dead' $T/f.err && grep -q 'rollout worker 1 is back' $T/f.err"
check "and sampled from the policy's adapters after the restart" "synced $T/f.jsonl lora"

# ---- 4. full fine-tuning: every parameter travels
timeout 120 "$BIN/ppo_run" "${common[@]}" --max-steps 3 --out "$T/full.ckpt" --metrics "$T/full.jsonl" 2>"$T/full.err"
check "full run exits 0" "[ $? -eq 0 ] && grep -q 'weight sync: all parameters' $T/full.err"
check "full sync: rollout log-probs are the policy's, all parameters on the wire" "synced $T/full.jsonl full"

# ---- 5. refused
"$BIN/ppo_run" "${common[@]}" --lora-rank 4 --quantize-base q4_0 --out "$T/x.ckpt" 2>"$T/e1.err"
check "--quantize-base refused" "[ $? -eq 1 ] && grep -q 'quantize-base is not supported' $T/e1.err"
timeout 60 "$BIN/ppo_run" "${common[@]}" --max-steps 6 --out "$T/x.ckpt" --resume "$T/a-step3.ckpt" 2>"$T/e2.err"
check "a LoRA checkpoint resumed without --lora-rank refused" "[ $? -eq 1 ] && grep -q 'holds LoRA adapters' $T/e2.err"

finish ppo_lora_sync
