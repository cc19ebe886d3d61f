#!/usr/bin/env bash
# A model whose chat template string is present but not one align renders
# exactly (here a Vicuna-style template) is refused by every training
# program, with one error naming --chat-template and the accepted names,
# before anything trains; --chat-template none|NAME overrides.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

cp -r "$HERE/../fixtures/hf_tiny_qwen2" "$T/m"
python3 - "$T/m/tokenizer_config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["chat_template"] = ("{% for message in messages %}{% if message['role'] == 'user' %}{{ 'USER: ' + message['content'] + '\n' }}"
                      "{% else %}{{ 'ASSISTANT: ' + message['content'] + '</s>\n' }}{% endif %}{% endfor %}"
                      "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")
json.dump(c, open(p, "w"))
PY
echo '{"question": "say hi", "answer": "hi there"}' > "$T/sft.jsonl"
echo '{"prompt": "say hi", "chosen": "hi there", "rejected": "go away"}' > "$T/prefs.jsonl"
echo '{"prompt": "say hi", "completion": "hi there", "label": true}' > "$T/kto.jsonl"
echo '{"question": "1+1?", "answer": "#### 2"}' > "$T/math.jsonl"

refused() { # NAME RC ERRFILE
    check "$1 refuses the unknown template (exit $2: $(head -c 300 "$3"))" \
        "[ $2 -ne 0 ] && grep -q -- '--chat-template' $3 && grep -q 'qwen2.5' $3 && grep -q 'mistral-v7' $3 && [ \$(wc -l < $3) -le 2 ]"
}
one=(--max-steps 1 --batch-size 1)
"$BIN/sft_run" --model "$T/m" --data "$T/sft.jsonl" "${one[@]}" --out "$T/s.ckpt" 2>"$T/sft.err"; refused sft_run $? "$T/sft.err"
check "nothing was written" "[ ! -e $T/s.ckpt ]"
"$BIN/dpo_run" --policy "$T/m" --data "$T/prefs.jsonl" "${one[@]}" --out "$T/d.ckpt" 2>"$T/dpo.err"; refused dpo_run $? "$T/dpo.err"
"$BIN/kto_run" --policy "$T/m" --data "$T/kto.jsonl" --max-steps 1 --batch-size 2 --out "$T/k.ckpt" 2>"$T/kto.err"; refused kto_run $? "$T/kto.err"
"$BIN/rm_train" "$T/prefs.jsonl" --model "$T/m" "${one[@]}" --out "$T/r.ckpt" 2>"$T/rm.err"; refused rm_train $? "$T/rm.err"
timeout 120 "$BIN/ppo_run" --policy "$T/m" --prompts "$T/math.jsonl" --advantage grpo --n 2 --reward math \
    --max-steps 1 --out "$T/p.ckpt" 2>"$T/ppo.err"; refused ppo_run $? "$T/ppo.err"

"$BIN/sft_run" --model "$T/m" --data "$T/sft.jsonl" "${one[@]}" --chat-template none --out "$T/n.ckpt" 2>"$T/n.err"
check "--chat-template none trains ($(tail -1 $T/n.err))" "[ $? -eq 0 ] && [ -f $T/n.ckpt ]"
"$BIN/sft_run" --model "$T/m" --data "$T/sft.jsonl" "${one[@]}" --chat-template qwen2.5 --out "$T/q.ckpt" 2>"$T/q.err"
check "--chat-template qwen2.5 trains ($(tail -1 $T/q.err))" "[ $? -eq 0 ] && [ -f $T/q.ckpt ]"
"$BIN/sft_run" --model "$T/m" --data "$T/sft.jsonl" "${one[@]}" --chat-template vicuna --out "$T/v.ckpt" 2>"$T/v.err"
check "an unknown --chat-template name lists the known ones" "[ $? -ne 0 ] && grep -q 'gemma3' $T/v.err"

finish
