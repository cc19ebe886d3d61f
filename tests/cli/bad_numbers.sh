#!/usr/bin/env bash
# No bad number gets in, no non-finite number gets out (issue 15):
#  - a numeric flag out of its range (NaN, Inf, negative, zero where a count
#    is needed) stops the program at parse time: exit 2 and one sentence
#    naming the flag, from argv or --config; documented sentinels still work;
#  - flags that combine badly get one sentence (exit 2);
#  - sft_run, dpo_run and rm_train stop on a non-finite loss (--lr 1e30),
#    name the step, exit non-zero and leave no --out file;
#  - an unwritable --out is refused before loading anything;
#  - logprobs on a model with a NaN weight stops, naming the record, and
#    writes nothing (JSON has no NaN).
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../fixtures/hf_tiny_qwen2
PREFS=$HERE/../fixtures/logprobs/prefs.jsonl
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

python3 - "$T/sft.jsonl" "$T/prefs.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(12):
        f.write(json.dumps({"question": "what is two plus two", "answer": "four"}) + "\n")
with open(sys.argv[2], "w") as f:
    for i in range(12):
        f.write(json.dumps({"prompt": "rate it", "chosen": "great, loved it", "rejected": "awful"}) + "\n")
PY

# refused: program, the flag named in the message, then the arguments
refused() {
  local prog=$1 flag=$2
  shift 2
  timeout 60 "$BIN/$prog" "$@" >/dev/null 2>"$T/err"
  local rc=$?
  check "$prog $*: exit 2 naming $flag (rc $rc: $(head -c 300 "$T/err"))" \
    "[ $rc -eq 2 ] && grep -q -- '$flag' '$T/err' && [ \$(wc -l < '$T/err') -eq 1 ] && ! grep -q 'step 1' '$T/err'"
}
SFT=(--model "$MODEL" --data "$T/sft.jsonl" --max-steps 1 --out "$T/x.ckpt")
DPO=(--policy "$MODEL" --data "$T/prefs.jsonl" --max-steps 1 --out "$T/x.ckpt")
RM=(--model "$MODEL" --data "$T/prefs.jsonl" --max-steps 1 --out "$T/x.ckpt")

for bad in "--lr nan" "--lr inf" "--lr -1" "--weight-decay nan" "--max-length -1" "--max-grad-norm -1" \
           "--lora-rank -2" "--lora-dropout 1.5" "--lora-alpha 0" "--batch-size 0" "--grad-accum 0" \
           "--epochs 0" "--max-steps 0" "--warmup-steps -1" "--save-every -1" "--eval-every -3"; do
  set -- $bad
  refused sft_run "$1" "${SFT[@]}" $bad
done
refused dpo_run --beta "${DPO[@]}" --beta -1
refused dpo_run --beta "${DPO[@]}" --beta 0
refused dpo_run --label-smoothing "${DPO[@]}" --label-smoothing nan
refused dpo_run --label-smoothing "${DPO[@]}" --label-smoothing 0.5
refused dpo_run --label-smoothing "${DPO[@]}" --loss hinge --label-smoothing 0.1
refused dpo_run --simpo-gamma "${DPO[@]}" --simpo-gamma 1
refused dpo_run --rpo-alpha "${DPO[@]}" --rpo-alpha -0.5
refused dpo_run --lr "${DPO[@]}" --lr -1
refused rm_train --center-rewards "${RM[@]}" --center-rewards -1
refused rm_train --lr "${RM[@]}" --lr nan
refused logprobs --batch-size --model "$MODEL" --data "$PREFS" --batch-size 0
refused logprobs --max-length --model "$MODEL" --data "$PREFS" --max-length -1
refused generate --top-p --model "$MODEL" --prompts "$PREFS" --top-p 0
refused generate --temperature --model "$MODEL" --prompts "$PREFS" --temperature nan
refused generate --n --model "$MODEL" --prompts "$PREFS" --n 0
refused model_init --dim --out "$T/m.ckpt" --dim 0
refused model_init --rope-theta --out "$T/m.ckpt" --rope-theta inf
refused model_init --kv-heads --out "$T/m.ckpt" --heads 4 --kv-heads 3
refused bench_train --steps --steps 0
refused bench_tokenizer --passes --passes 1
echo '{"lr": "nan"}' > "$T/c1.json"
refused sft_run '"lr"' "${SFT[@]}" --config "$T/c1.json"
echo '{"beta": -1}' > "$T/c2.json"
refused dpo_run '"beta"' "${DPO[@]}" --config "$T/c2.json"
refused sft_run --eval-every "${SFT[@]}" --eval-every 2

# documented sentinels still work
timeout 120 "$BIN/sft_run" "${SFT[@]}" --max-steps -1 --epochs 1 --batch-size 12 --lora-rank 2 --lora-alpha -1 \
  --out "$T/ok.ckpt" 2>"$T/ok.err"
check "--max-steps -1 and --lora-alpha -1 accepted ($(tail -1 "$T/ok.err"))" "[ $? -eq 0 ] && [ -f '$T/ok.ckpt' ]"

# a non-finite loss stops the trainer at the step it happens
for prog in sft_run dpo_run rm_train; do
  case $prog in
    sft_run) args=("${SFT[@]}") ;;
    dpo_run) args=("${DPO[@]}") ;;
    rm_train) args=("${RM[@]}") ;;
  esac
  rm -f "$T/x.ckpt"
  timeout 120 "$BIN/$prog" "${args[@]}" --max-steps 4 --batch-size 4 --lr 1e30 2>"$T/nan.err"
  rc=$?
  check "$prog --lr 1e30 exits non-zero (rc $rc)" "[ $rc -ne 0 ]"
  check "$prog names the step: $(tail -1 "$T/nan.err")" "grep -q '$prog: step [0-9]*: the \(loss\|gradient norm\) is' '$T/nan.err'"
  check "$prog writes no --out" "[ ! -e '$T/x.ckpt' ]"
done

# an unwritable --out is refused before the model is loaded
touch "$T/file"
for out in /proc/x.ckpt "$T/file/x.ckpt" "$T/file/hfdir" "$T/file" "$T/x.gguf"; do
  timeout 60 "$BIN/sft_run" --model "$MODEL" --data "$T/sft.jsonl" --out "$out" 2>"$T/err"
  rc=$?
  check "--out $out refused (rc $rc: $(cat "$T/err"))" \
    "[ $rc -eq 2 ] && grep -q -- '--out $out' '$T/err' && ! grep -q examples '$T/err'"
done
timeout 60 "$BIN/dpo_run" "${DPO[@]}" --out /proc/x.ckpt 2>"$T/err"
check "dpo_run refuses --out /proc/x.ckpt" "[ $? -eq 2 ] && grep -q -- '--out /proc/x.ckpt' '$T/err'"
timeout 60 "$BIN/rm_train" "${RM[@]}" --out /proc/x.ckpt 2>"$T/err"
check "rm_train refuses --out /proc/x.ckpt" "[ $? -eq 2 ] && grep -q -- '--out /proc/x.ckpt' '$T/err'"
timeout 60 "$BIN/sft_run" "${SFT[@]}" --lora-rank 2 --lora-out "$T/file/adapter" 2>"$T/err"
check "an unwritable --lora-out is refused" "[ $? -eq 2 ] && grep -q -- '--lora-out' '$T/err'"

# logprobs: a NaN weight gives no "nan" in the output, but an error naming the record
cp -r "$MODEL" "$T/nanmodel"
python3 - "$T/nanmodel/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
t = h["model.norm.weight"]
assert t["dtype"] == "F32"
struct.pack_into("<f", b, 8 + n + t["data_offsets"][0], float("nan"))
open(p, "wb").write(b)
PY
timeout 60 "$BIN/logprobs" --model "$T/nanmodel" --data "$PREFS" --out "$T/lp.jsonl" 2>"$T/err"
rc=$?
check "logprobs on a NaN model exits non-zero (rc $rc)" "[ $rc -ne 0 ]"
check "logprobs names the record: $(cat "$T/err")" "grep -q 'prefs.jsonl:1: the chosen log-probability is NaN' '$T/err'"
check "logprobs writes nothing" "[ ! -e '$T/lp.jsonl' ]"
timeout 60 "$BIN/logprobs" --model "$T/nanmodel" --data "$T/sft.jsonl" 2>"$T/err" >"$T/lp2"
check "logprobs (SFT records) never prints nan" "[ $? -ne 0 ] && ! grep -qi nan '$T/lp2' && grep -q 'sft.jsonl:1: the log-probability is NaN' '$T/err'"
check "logprobs --help says so" "'$BIN/logprobs' --help | grep -q 'not finite'"

finish
