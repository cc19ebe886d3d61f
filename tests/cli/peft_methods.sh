#!/usr/bin/env bash
# DoRA (--peft dora, --use-dora) and IA3 (--peft ia3) on every trainer, end
# to end on the tiny fixtures:
#  - sft_run --peft dora on the tiny Qwen2: an adapter directory peft reads
#    (use_dora true, lora_magnitude_vector tensors) and a merged model;
#    sft_run --peft ia3 on the tiny GPT-2: peft_type IA3, c_attn and
#    mlp.c_proj, feedforward_modules mlp.c_proj, ia3_l tensors;
#  - dpo_run with either: the reference is the base with the adapters off,
#    and fresh adapters leave the model as it was, so the first loss is ln 2;
#  - --resume from a DoRA or an IA3 checkpoint: the unbroken run's losses
#    and adapter;
#  - rm_train with IA3 saves a SEQ_CLS adapter with the score head;
#  - ppo_run with DoRA and IA3, two rollout workers: adapters only on the
#    wire and the workers sample from exactly the policy's weights
#    (approxkl < 1e-8, see ppo_lora_sync.sh);
#  - --lora-adapter of an IA3 directory continues training it;
#  - refusals in one sentence: --peft ia3 with --lora-rank, --use-dora with
#    --peft bitfit, an IA3 adapter given to --peft dora.
# (tests/cli/peft_methods_peft.sh loads the adapters in peft itself.)
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
QWEN=$HERE/../fixtures/hf_tiny_qwen2
GPT2=$HERE/../fixtures/hf_tiny_gpt2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/ppo.sh"

python3 - "$T/sft.jsonl" "$T/prefs.jsonl" <<'PY'
import json, sys
qa = [("what is two plus two", "four", "five"), ("name a color", "blue", "table"), ("say hi", "hi there", "go away")]
with open(sys.argv[1], "w") as f, open(sys.argv[2], "w") as g:
    for i in range(12):
        q, a, r = qa[i % 3]
        f.write(json.dumps({"question": q, "answer": a}) + "\n")
        g.write(json.dumps({"prompt": q, "chosen": a, "rejected": r}) + "\n")
PY
keys() { python3 - "$1" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read(); h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
print("\n".join(sorted(k for k in h if k != "__metadata__")))
PY
}
first_loss() { head -1 "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["loss"])'; }
is_ln2() { python3 -c "import math,sys; sys.exit(0 if abs($1 - math.log(2)) < 1e-6 else 1)"; }
sft=(--data "$T/sft.jsonl" --lr 1e-2 --batch-size 4 --max-length 64 --max-steps 3 --chat-template none)

# ---- sft_run
"$BIN/sft_run" --model "$QWEN" "${sft[@]}" --peft dora --lora-rank 4 --out "$T/dora.ckpt" 2>"$T/dora.err"
check "sft_run --peft dora exits 0" "[ $? -eq 0 ] && grep -q 'DoRA: .* trainable parameters' $T/dora.err"
check "the DoRA adapter says use_dora" "grep -q '\"use_dora\":.*true' $T/dora-adapter/adapter_config.json && grep -q '\"LORA\"' $T/dora-adapter/adapter_config.json"
n_mag=$(keys "$T/dora-adapter/adapter_model.safetensors" | grep -c 'lora_magnitude_vector$')
check "one magnitude per adapted linear (2 layers x 7: $n_mag)" "[ $n_mag -eq 14 ]"
check "the merged model is written" "[ -s $T/dora.ckpt ]"
"$BIN/sft_run" --model "$QWEN" "${sft[@]}" --lora-rank 4 --use-dora --out "$T/dora2.ckpt" 2>"$T/dora2.err"
check "--lora-rank 4 --use-dora is the same run" "[ $? -eq 0 ] && cmp -s $T/dora-adapter/adapter_model.safetensors $T/dora2-adapter/adapter_model.safetensors"

"$BIN/sft_run" --model "$GPT2" "${sft[@]}" --peft ia3 --out "$T/ia3.ckpt" 2>"$T/ia3.err"
check "sft_run --peft ia3 exits 0" "[ $? -eq 0 ] && grep -q 'IA3: .* trainable parameters' $T/ia3.err"
check "peft_type IA3 with peft's GPT-2 targets" "python3 -c \"
import json, sys
c = json.load(open('$T/ia3-adapter/adapter_config.json'))
sys.exit(0 if c['peft_type'] == 'IA3' and c['target_modules'] == ['c_attn', 'mlp.c_proj'] and c['feedforward_modules'] == ['mlp.c_proj'] else 1)\""
check "ia3_l tensors only" "[ \"\$(keys $T/ia3-adapter/adapter_model.safetensors | grep -vc 'ia3_l$')\" = 0 ]"

# ---- dpo_run: the reference is the base, adapters off
"$BIN/dpo_run" --policy "$QWEN" --data "$T/prefs.jsonl" --lr 1e-2 --batch-size 2 --max-length 64 --chat-template none \
    --peft ia3 --max-steps 4 --save-every 2 --out "$T/dpo_ia3.ckpt" --metrics "$T/dpo_ia3.jsonl" 2>"$T/dpo_ia3.err"
check "dpo_run --peft ia3 exits 0" "[ $? -eq 0 ] && grep -q 'reference = the base model' $T/dpo_ia3.err"
check "IA3's first DPO loss is ln 2" "is_ln2 $(first_loss $T/dpo_ia3.jsonl)"
"$BIN/dpo_run" --policy "$QWEN" --data "$T/prefs.jsonl" --lr 1e-2 --batch-size 2 --max-length 64 --chat-template none \
    --peft ia3 --max-steps 4 --save-every 2 --out "$T/dpo_ia3b.ckpt" --metrics "$T/dpo_ia3b.jsonl" \
    --resume "$T/dpo_ia3-step2.ckpt" 2>"$T/dpo_ia3b.err"
check "IA3 resume: the unbroken run's losses and adapter" "[ $? -eq 0 ] && diff <(tail -2 $T/dpo_ia3.jsonl | cut -d, -f1-3) <(cut -d, -f1-3 $T/dpo_ia3b.jsonl) && cmp -s $T/dpo_ia3-adapter/adapter_model.safetensors $T/dpo_ia3b-adapter/adapter_model.safetensors"
dpo=(--policy "$QWEN" --data "$T/prefs.jsonl" --lr 1e-2 --batch-size 2 --max-length 64 --chat-template none
     --use-dora --lora-rank 4 --lora-dropout 0.1 --save-every 2)
"$BIN/dpo_run" "${dpo[@]}" --max-steps 4 --out "$T/a.ckpt" --metrics "$T/a.jsonl" 2>"$T/a.err"
check "dpo_run --use-dora exits 0" "[ $? -eq 0 ]"
check "DoRA's first DPO loss is ln 2" "is_ln2 $(first_loss $T/a.jsonl)"
"$BIN/dpo_run" "${dpo[@]}" --max-steps 4 --out "$T/b.ckpt" --metrics "$T/b.jsonl" --resume "$T/a-step2.ckpt" 2>"$T/b.err"
check "DoRA resume exits 0" "[ $? -eq 0 ]"
check "resumed losses equal the unbroken run's" "diff <(tail -2 $T/a.jsonl | cut -d, -f1-3) <(cut -d, -f1-3 $T/b.jsonl)"
check "resumed DoRA adapter bit-identical" "cmp -s $T/a-adapter/adapter_model.safetensors $T/b-adapter/adapter_model.safetensors"

# ---- rm_train
"$BIN/rm_train" --model "$GPT2" --data "$T/prefs.jsonl" --lr 1e-2 --batch-size 2 --max-length 64 --max-steps 2 \
    --chat-template none --peft ia3 --out "$T/rm.ckpt" 2>"$T/rm.err"
check "rm_train --peft ia3 exits 0" "[ $? -eq 0 ]"
check "its adapter is SEQ_CLS with the score head" "grep -q SEQ_CLS $T/rm-adapter/adapter_config.json && keys $T/rm-adapter/adapter_model.safetensors | grep 'score.weight' >/dev/null"

# ---- continuing from an IA3 adapter directory
"$BIN/sft_run" --model "$GPT2" "${sft[@]}" --lora-adapter "$T/ia3-adapter" --out "$T/ia3b.ckpt" 2>"$T/ia3b.err"
check "--lora-adapter reads an IA3 directory" "[ $? -eq 0 ] && grep -q 'IA3 adapter' $T/ia3b.err"

# ---- ppo_run: adapters only on the wire, workers in step with the policy
ppo_data "$T" 0 32
"$BIN/model_init" --dim 32 --layers 2 --heads 2 --tokenizer byte --out "$T/init.ckpt" 2>/dev/null
"$BIN/rm_train" "$T/prefs.jsonl" --model "$T/init.ckpt" --out "$T/prm.ckpt" --lr 1e-2 --batch-size 16 --max-steps 2 2>/dev/null
synced() { python3 - "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
kl = [r['policy/approxkl_avg'] for r in rows]
b = [r['weight_sync/bytes'] for r in rows]
print('approxkl', ' '.join('%.1e' % x for x in kl), ' bytes', b[0])
# the model: 27k parameters (108 KB); the adapters far below it
sys.exit(0 if rows and all(x < 1e-8 for x in kl) and all(x == b[0] and 0 < x < 40000 for x in b) else 1)
PY
}
ppo=(--policy "$T/init.ckpt" --reward "$T/prm.ckpt" --prompts "$T/prompts.jsonl" --batch-size 8 --n 2
     --max-new-tokens 12 --lr 1e-2 --seed 3 --ppo-epochs 1 --rollout-workers 2 --max-steps 3)
for m in dora ia3; do
    extra=(--peft "$m"); [ "$m" = dora ] && extra+=(--lora-rank 4 --lora-dropout 0)
    timeout 120 "$BIN/ppo_run" "${ppo[@]}" "${extra[@]}" --out "$T/ppo_$m.ckpt" --metrics "$T/ppo_$m.jsonl" 2>"$T/ppo_$m.err"
    check "ppo_run --peft $m exits 0" "[ $? -eq 0 ] && grep -q 'weight sync: LoRA adapters only' $T/ppo_$m.err"
    check "ppo_run --peft $m: workers sample from the policy's adapters" "synced $T/ppo_$m.jsonl"
    check "ppo_run --peft $m wrote its adapter" "[ -s $T/ppo_$m-adapter/adapter_config.json ]"
done

# ---- refusals
"$BIN/sft_run" --model "$GPT2" "${sft[@]}" --peft ia3 --lora-rank 4 --out "$T/x.ckpt" 2>"$T/e1"
check "--peft ia3 with --lora-rank refused" "[ $? -ne 0 ] && grep -q 'does not apply' $T/e1 && [ \$(wc -l < $T/e1) -le 3 ]"
"$BIN/sft_run" --model "$GPT2" "${sft[@]}" --peft bitfit --use-dora --out "$T/x.ckpt" 2>"$T/e2"
check "--use-dora with --peft bitfit refused" "[ $? -ne 0 ] && grep -q 'use-dora' $T/e2"
"$BIN/sft_run" --model "$GPT2" "${sft[@]}" --peft dora --lora-adapter "$T/ia3-adapter" --out "$T/x.ckpt" 2>"$T/e3"
check "an IA3 adapter given to --peft dora refused" "[ $? -ne 0 ] && grep -q 'holds IA3 adapters' $T/e3"

finish
