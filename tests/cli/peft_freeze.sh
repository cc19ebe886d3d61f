#!/usr/bin/env bash
# BitFit and freeze tuning end to end (sft_run, dpo_run, rm_train, ppo_run):
#  - sft_run --peft bitfit on the tiny GPT-2 fixture changes every bias
#    and nothing else, and saves a full model (no adapter directory);
#    --train-only bias is the same method;
#  - sft_run --peft freeze --trainable-layers 1 --trainable-modules mlp
#    changes only the last layer's MLP;
#  - dpo_run with freeze tuning: the reference is the frozen starting
#    model, so the first loss is ln 2;
#  - rm_train with BitFit trains the biases and the score head;
#  - refusals in one sentence: BitFit on a model without biases (Llama),
#    --peft names not implemented yet (adalora), --lora-rank with --peft bitfit;
#  - ppo_run with BitFit and with freeze tuning changes only those tensors.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
GPT2=$HERE/../fixtures/hf_tiny_gpt2
LLAMA=$HERE/../fixtures/hf_tiny_llama
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

python3 - "$T/sft.jsonl" "$T/prefs.jsonl" <<'PY'
import json, sys
qa = [("what is two plus two", "four", "five"), ("name a color", "blue", "table"), ("say hi", "hi there", "go away")]
with open(sys.argv[1], "w") as f, open(sys.argv[2], "w") as g:
    for i in range(12):
        q, a, r = qa[i % 3]
        f.write(json.dumps({"question": q, "answer": a}) + "\n")
        g.write(json.dumps({"prompt": q, "chosen": a, "rejected": r}) + "\n")
PY
# changed A B: the names of the tensors that differ between two .ckpt files
# (one per line, sorted); tensors only in B are listed with a leading +
changed() { python3 - "$1" "$2" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
a, b = load(sys.argv[1]), load(sys.argv[2])
for k in sorted(b):
    if k not in a: print("+" + k)
    elif a[k] != b[k]: print(k)
PY
}
"$BIN/ckpt_convert" "$GPT2" "$T/base.ckpt" 2>/dev/null
check "the fixture converts" "[ -f $T/base.ckpt ]"
biases=$(python3 - "$T/base.ckpt" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read(); h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
print("\n".join(sorted(k for k in h if k.endswith(".bias"))))
PY
)
sft=(--model "$GPT2" --data "$T/sft.jsonl" --lr 1e-2 --batch-size 4 --max-length 64 --max-steps 3 --chat-template none)

"$BIN/sft_run" "${sft[@]}" --peft bitfit --out "$T/bitfit.ckpt" 2>"$T/bitfit.err"
check "sft_run --peft bitfit exits 0" "[ $? -eq 0 ] && grep -q 'BitFit: .* trainable parameters' $T/bitfit.err"
check "BitFit changed every bias and nothing else" "[ \"\$(changed $T/base.ckpt $T/bitfit.ckpt)\" = \"\$biases\" ]"
check "saved as a full model, no adapter" "[ ! -e $T/bitfit-adapter ]"
"$BIN/sft_run" "${sft[@]}" --train-only bias --out "$T/bias.ckpt" 2>"$T/bias.err"
check "--train-only bias is BitFit (same weights)" "[ $? -eq 0 ] && [ -z \"\$(changed $T/bitfit.ckpt $T/bias.ckpt)\" ]"

"$BIN/sft_run" "${sft[@]}" --peft freeze --trainable-layers 1 --trainable-modules mlp --out "$T/freeze.ckpt" 2>"$T/freeze.err"
check "sft_run --peft freeze exits 0" "[ $? -eq 0 ] && grep -q 'freeze tuning' $T/freeze.err"
last=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["n_layer"] - 1)' "$GPT2/config.json")
want=$(printf '%s\n' transformer.h.$last.mlp.c_fc.bias transformer.h.$last.mlp.c_fc.weight transformer.h.$last.mlp.c_proj.bias transformer.h.$last.mlp.c_proj.weight)
check "freeze tuning changed only the last layer's MLP" "[ \"\$(changed $T/base.ckpt $T/freeze.ckpt)\" = \"\$want\" ]"

"$BIN/dpo_run" --policy "$GPT2" --data "$T/prefs.jsonl" --lr 1e-2 --batch-size 2 --max-length 64 --max-steps 2 \
  --chat-template none --peft freeze --trainable-layers 1 --out "$T/dpo.ckpt" --metrics "$T/dpo.jsonl" 2>"$T/dpo.err"
check "dpo_run with freeze tuning exits 0" "[ $? -eq 0 ]"
first=$(head -1 "$T/dpo.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["loss"])')
check "the reference is the starting model: first loss ln 2 ($first)" "python3 -c 'import math,sys; sys.exit(0 if abs($first - math.log(2)) < 1e-6 else 1)'"

"$BIN/rm_train" --model "$GPT2" --data "$T/prefs.jsonl" --lr 1e-2 --batch-size 2 --max-length 64 --max-steps 2 \
  --chat-template none --peft bitfit --out "$T/rm.ckpt" 2>"$T/rm.err"
check "rm_train --peft bitfit exits 0" "[ $? -eq 0 ]"
# (ln_f.bias shifts both rewards of a pair alike: its gradient is 0)
got=$(changed "$T/base.ckpt" "$T/rm.ckpt" | grep -v '^+')
check "rm_train BitFit changed only biases" "[ -n \"\$got\" ] && [ -z \"\$(grep -v '\\.bias\$' <<<\"\$got\")\" ]"
check "the reward model was saved with its score head" "changed $T/base.ckpt $T/rm.ckpt | grep -q '^+score.weight'"

"$BIN/sft_run" --model "$LLAMA" --data "$T/sft.jsonl" --peft bitfit --out "$T/x.ckpt" 2>"$T/e1"
check "BitFit on a model without biases refused" "[ $? -ne 0 ] && grep -q 'no bias tensors' $T/e1 && [ \$(wc -l < $T/e1) -le 3 ]"
"$BIN/sft_run" --model "$GPT2" --data "$T/sft.jsonl" --peft adalora --out "$T/x.ckpt" 2>"$T/e2"
check "--peft adalora: not implemented yet" "[ $? -ne 0 ] && grep -q 'not implemented yet' $T/e2"
"$BIN/sft_run" --model "$GPT2" --data "$T/sft.jsonl" --peft bitfit --lora-rank 4 --out "$T/x.ckpt" 2>"$T/e3"
check "--peft bitfit with --lora-rank refused" "[ $? -ne 0 ] && grep -q 'cannot be combined with --lora-rank' $T/e3"
"$BIN/sft_run" --model "$GPT2" --data "$T/sft.jsonl" --peft lora --trainable-layers 2 --out "$T/x.ckpt" 2>"$T/e4"
check "--trainable-layers with LoRA refused" "[ $? -ne 0 ] && grep -q 'needs --peft freeze' $T/e4"
"$BIN/sft_run" "${sft[@]}" --peft freeze --trainable-modules bogus --out "$T/x.ckpt" 2>"$T/e5"
check "a bad --trainable-modules name is named" "[ $? -ne 0 ] && grep -q 'bogus' $T/e5"
# ppo_run (GRPO, a format reward that random text meets about half the time):
# the policy process thaws the same subset; the sync sends every parameter
ppo=(--policy "$GPT2" --prompts "$T/sft.jsonl" --reward format --format-pattern e --advantage grpo --n 4 --batch-size 4
     --max-new-tokens 8 --lr 1e-2 --max-steps 2 --chat-template none --seed 3)
timeout 120 "$BIN/ppo_run" "${ppo[@]}" --peft bitfit --out "$T/ppo-bitfit.ckpt" 2>"$T/pb.err"
check "ppo_run --peft bitfit exits 0 ($(tail -1 "$T/pb.err"))" "[ $? -eq 0 ] && grep -q 'ppo_policy: bitfit: .* trainable parameters' $T/pb.err"
got=$(changed "$T/base.ckpt" "$T/ppo-bitfit.ckpt")
check "ppo_run BitFit changed biases and nothing else" "[ -n \"\$got\" ] && [ -z \"\$(grep -v '\\.bias\$' <<<\"\$got\")\" ]"
timeout 120 "$BIN/ppo_run" "${ppo[@]}" --peft freeze --trainable-layers 1 --trainable-modules mlp --out "$T/ppo-freeze.ckpt" 2>"$T/pf.err"
check "ppo_run --peft freeze exits 0 ($(tail -1 "$T/pf.err"))" "[ $? -eq 0 ]"
got=$(changed "$T/base.ckpt" "$T/ppo-freeze.ckpt")
check "ppo_run freeze tuning changed only the last layer's MLP" "[ -n \"\$got\" ] && [ -z \"\$(grep -v '^transformer.h.$last.mlp' <<<\"\$got\")\" ]"

finish
