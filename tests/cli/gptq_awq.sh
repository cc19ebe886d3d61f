#!/usr/bin/env bash
# GPTQ and AWQ checkpoints (tests/fixtures/gptq_awq/, a tiny Llama in each
# layout) as a frozen base, end to end:
#  - dpo_run --lora-rank on the GPTQ act-order checkpoint keeps its groups
#    (the log names the types), the reference is the base with adapters
#    off (first loss ln 2), the adapter is saved;
#  - training without LoRA is refused with one sentence naming the path;
#  - ppo_run (GRPO) with LoRA runs on it, rollout workers included, and
#    without LoRA is refused;
#  - generate runs on the GPTQ checkpoint;
#  - ckpt_convert dequantises it to a .ckpt whose log-probs equal the
#    quantised base's (the export is the weights the base computes with);
#  - an 8-bit checkpoint is refused naming config.json's field.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
FIX=$HERE/../fixtures/gptq_awq
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

python3 - "$T/prefs.jsonl" <<'PY'
import json, sys
pairs = [("what is two plus two", "four", "five"), ("name a color", "blue", "table"), ("say hi", "hi there", "go away")]
with open(sys.argv[1], "w") as f:
    for i in range(6):
        p, c, r = pairs[i % 3]
        f.write(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n")
PY

"$BIN/dpo_run" --policy "$FIX/gptq_g128_act" --data "$T/prefs.jsonl" --lr 1e-2 --batch-size 2 --max-length 64 \
  --lora-rank 4 --chat-template none --max-steps 2 --out "$T/a.ckpt" --metrics "$T/a.jsonl" 2>"$T/a.err"
check "dpo_run with LoRA on a GPTQ base exits 0 ($(tail -1 "$T/a.err"))" "[ $? -eq 0 ]"
check "the checkpoint's groups are kept" "grep -q 'kept quantised as the checkpoint stores them (int4_g128, int4_g128_act_order)' $T/a.err"
check "the reference is the base, adapters off" "grep -q 'reference = the base model' $T/a.err"
first=$(head -1 "$T/a.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["loss"])')
check "first loss is ln 2 ($first)" "python3 -c 'import math,sys; sys.exit(0 if abs($first - math.log(2)) < 1e-6 else 1)'"
check "adapter saved in peft layout" "[ -f $T/a-adapter/adapter_model.safetensors ]"

"$BIN/dpo_run" --policy "$FIX/gptq_g128_act" --data "$T/prefs.jsonl" --batch-size 2 --chat-template none \
  --max-steps 1 --out "$T/b.ckpt" 2>"$T/b.err"
check "full fine-tuning of a GPTQ base refused naming it" "[ $? -ne 0 ] && grep -q 'gptq_g128_act keeps 7 weights quantised' $T/b.err"
for v in prompt prefix; do
    "$BIN/dpo_run" --policy "$FIX/gptq_g128_act" --data "$T/prefs.jsonl" --batch-size 2 --chat-template none \
      --peft $v --num-virtual-tokens 4 --max-steps 2 --out "$T/$v.ckpt" 2>"$T/$v.err"
    check "--peft $v on a GPTQ base trains (the base stays frozen) ($(tail -1 "$T/$v.err"))" "[ $? -eq 0 ] && [ -s $T/$v.ckpt ]"
done

# GRPO with LoRA: the rollout workers load the same quantised base and
# attach the synced adapters, so their log-probs match the actor's
python3 - "$T/labelled.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(8):
        f.write(json.dumps({"prompt": "Write %d:" % i, "answer": "a" * (i % 3 + 1)}) + "\n")
PY
grpo=(--policy "$FIX/gptq_g128_act" --prompts "$T/labelled.jsonl" --advantage grpo --n 4 --batch-size 4
      --max-new-tokens 4 --lr 3e-3 --seed 3 --reward exact --chat-template none)
timeout 120 "$BIN/ppo_run" "${grpo[@]}" --max-steps 2 --lora-rank 4 --out "$T/g.ckpt" --metrics "$T/g.jsonl" 2>"$T/g.err"
check "ppo_run (GRPO) with LoRA on a GPTQ base exits 0 ($(tail -1 "$T/g.err"))" "[ $? -eq 0 ]"
check "rollout log-probs equal the actor's at step 1" "python3 - $T/g.jsonl <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
# step 1 samples from the synced base: equal to float noise; later steps
# drift as with an fp32 base (hf_tiny_llama: 2e-4 at step 2)
sys.exit(0 if len(rows) == 2 and rows[0]['rollout/logp_diff_max'] < 1e-5 and rows[1]['rollout/logp_diff_max'] < 1e-2 else 1)
PY"
timeout 60 "$BIN/ppo_run" "${grpo[@]}" --max-steps 1 --out "$T/h.ckpt" 2>"$T/h.err"
check "ppo_run without LoRA refused naming the base" "[ $? -ne 0 ] && grep -q 'gptq_g128_act keeps 7 weights quantised' $T/h.err"

# generate and logprobs need a tokenizer: gptq_g128_act carries
# hf_tiny_llama's (the other fixtures have none)
echo '{"prompt": "say hi"}' > "$T/p.jsonl"
"$BIN/generate" --model "$FIX/gptq_g128_act" --prompts "$T/p.jsonl" --max-new-tokens 4 --temperature 0 \
  --chat-template none > "$T/g.jsonl" 2>"$T/g.err"
check "generate on a GPTQ base" "[ $? -eq 0 ] && grep -q '\"finish_reason\"' $T/g.jsonl"

"$BIN/ckpt_convert" "$FIX/gptq_g128_act" "$T/deq.ckpt" 2>"$T/c.err"
check "ckpt_convert dequantises a GPTQ checkpoint" "[ $? -eq 0 ] && [ -f $T/deq.ckpt ]"
"$BIN/logprobs" --model "$FIX/gptq_g128_act" --data "$T/prefs.jsonl" --chat-template none > "$T/lq" 2>/dev/null
"$BIN/logprobs" --model "$T/deq.ckpt" --data "$T/prefs.jsonl" --chat-template none > "$T/lf" 2>/dev/null
check "the dequantised .ckpt scores as the quantised base" "[ -s $T/lq ] && cmp -s $T/lq $T/lf"

mkdir "$T/bad"
sed 's/"bits": 4/"bits": 8/' "$FIX/awq_g32/config.json" > "$T/bad/config.json"
ln -s "$FIX/awq_g32/model.safetensors" "$T/bad/model.safetensors"
"$BIN/ckpt_convert" "$T/bad" "$T/x.ckpt" 2>"$T/e.err"
check "an 8-bit AWQ checkpoint refused naming the field" "[ $? -ne 0 ] && grep -q 'config.json: quantization_config.bits is 8' $T/e.err"
finish gptq_awq
