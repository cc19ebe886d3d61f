#!/usr/bin/env bash
# LoRA end to end on the tiny Qwen2 fixture (dpo_run, 4-bit base):
#  - with --lora-rank and no --ref the reference is the base with adapters
#    off: the first loss is exactly ln 2 (B = 0, so policy == reference);
#  - the adapter alone lands in <out>-adapter in peft's layout, the merged
#    model in --out;
#  - --resume from a periodic checkpoint (adapters + moments, dropout on)
#    gives the unbroken run's losses and bit-identical adapters;
#  - --lora-adapter starts another stage from that adapter;
#  - --quantize-base without LoRA is refused with one sentence;
#  - QLoRA's NF4 base on the tiny GPT-2 (its MLP c_proj, 64 inputs, is the
#    one weight NF4's blocks of 64 fit), read tensor by tensor from the
#    Hugging Face directory: dpo_run's first loss is ln 2, the adapter and
#    the merged model are saved.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../fixtures/hf_tiny_qwen2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

python3 - "$T/prefs.jsonl" "$T/sft.jsonl" <<'PY'
import json, sys
pairs = [("what is two plus two", "four", "five"), ("name a color", "blue", "table"), ("say hi", "hi there", "go away")]
with open(sys.argv[1], "w") as f:
    for i in range(12):
        p, c, r = pairs[i % 3]
        f.write(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n")
with open(sys.argv[2], "w") as f:
    f.write(json.dumps({"question": "say hi", "answer": "hi there"}) + "\n")
PY
common=(--policy "$MODEL" --data "$T/prefs.jsonl" --lr 1e-2 --batch-size 2 --max-length 64 --lora-rank 4
        --lora-dropout 0.1 --quantize-base q4_0 --chat-template none)

"$BIN/dpo_run" "${common[@]}" --max-steps 6 --save-every 3 --out "$T/a.ckpt" --metrics "$T/a.jsonl" 2>"$T/a.err"
check "dpo_run with LoRA on a q4_0 base exits 0" "[ $? -eq 0 ]"
check "the reference is the base, adapters off" "grep -q 'reference = the base model' $T/a.err"
check "base weights quantised" "grep -q 'tensors quantised' $T/a.err"
first=$(head -1 "$T/a.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["loss"])')
check "first loss is ln 2 ($first)" "python3 -c 'import math,sys; sys.exit(0 if abs($first - math.log(2)) < 1e-6 else 1)'"
check "adapter saved in peft layout" "[ -f $T/a-adapter/adapter_model.safetensors ] && grep -q LORA $T/a-adapter/adapter_config.json"
check "merged model saved" "[ -f $T/a.ckpt ]"

"$BIN/dpo_run" "${common[@]}" --max-steps 6 --out "$T/b.ckpt" --metrics "$T/b.jsonl" --resume "$T/a-step3.ckpt" 2>"$T/b.err"
check "resume exits 0" "[ $? -eq 0 ]"
check "resumed losses equal the unbroken run's" "diff <(tail -3 $T/a.jsonl | cut -d, -f1-3) <(cut -d, -f1-3 $T/b.jsonl)"
check "resumed adapters bit-identical" "cmp -s $T/a-adapter/adapter_model.safetensors $T/b-adapter/adapter_model.safetensors"

"$BIN/sft_run" --model "$MODEL" --data "$T/sft.jsonl" --lora-adapter "$T/a-adapter" --max-steps 1 --batch-size 1 \
  --out "$T/c.ckpt" 2>"$T/c.err"
check "sft_run starts from the adapter" "[ $? -eq 0 ] && grep -q 'LoRA adapter' $T/c.err"

"$BIN/sft_run" --model "$MODEL" --data "$T/sft.jsonl" --quantize-base q4_0 --out "$T/x.ckpt" 2>"$T/e1"
check "--quantize-base without LoRA refused" "[ $? -ne 0 ] && grep -q 'needs LoRA' $T/e1"
"$BIN/sft_run" --model "$MODEL" --data "$T/sft.jsonl" --lora-rank 2 --lora-targets q_proj,bogus --out "$T/x.ckpt" 2>"$T/e2"
check "bad --lora-targets named" "[ $? -ne 0 ] && grep -q 'bogus' $T/e2"

GPT2=$HERE/../fixtures/hf_tiny_gpt2
"$BIN/dpo_run" --policy "$GPT2" --data "$T/prefs.jsonl" --lr 1e-2 --batch-size 2 --max-length 64 --lora-rank 4 \
  --quantize-base nf4 --chat-template none --max-steps 2 --out "$T/n.ckpt" --metrics "$T/n.jsonl" 2>"$T/n.err"
check "dpo_run on an nf4 base exits 0" "[ $? -eq 0 ]"
check "two weights quantised to nf4 while loading" "grep -q '2 tensors quantised (nf4) while loading' $T/n.err"
first=$(head -1 "$T/n.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["loss"])')
check "nf4: first loss is ln 2 ($first)" "python3 -c 'import math,sys; sys.exit(0 if abs($first - math.log(2)) < 1e-6 else 1)'"
check "nf4: adapter and merged model saved" "[ -f $T/n-adapter/adapter_model.safetensors ] && [ -f $T/n.ckpt ]"

# peft's base_model_name_or_path: the model the base was loaded from, so
# AutoPeftModelForCausalLM.from_pretrained(adapter) finds it; a --resume
# from a LoRA checkpoint still knows it; the merged (trained) model has none
base_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["base_model_name_or_path"])' "$1"; }
real=$(realpath "$MODEL")
check "the adapter names its base ($(base_of $T/a-adapter/adapter_config.json))" "[ \"\$(base_of $T/a-adapter/adapter_config.json)\" = '$real' ]"
check "a resumed run's adapter names the same base" "[ \"\$(base_of $T/b-adapter/adapter_config.json)\" = '$real' ]"
check "the merged model records no base" "! grep -q '\"base_model\"' $T/a.ckpt"

finish
