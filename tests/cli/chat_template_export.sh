#!/usr/bin/env bash
# The template a trained model is saved with is the one training rendered
# with. A copy of the tiny Qwen2 fixture gets SmolLM2-135M-Instruct's own
# template (the smollm2 family: ChatML plus a default system message, which
# align renders as transformers does); after sft_run the exported model
# (Hugging Face directory and .ckpt) carries that same template,
# --chat-template chatml exports plain ChatML (no default system message)
# and --chat-template hh exports hh. When jinja2 is installed, the exported
# template renders exactly the prompt training tokenized.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

cp -r "$HERE/../fixtures/hf_tiny_qwen2" "$T/smol"
python3 - "$T/smol/tokenizer_config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["chat_template"] = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
json.dump(c, open(p, "w"))
PY
echo '{"messages": [{"role": "user", "content": "say hi"}, {"role": "assistant", "content": "hi there"}]}' > "$T/sft.jsonl"
tmpl() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("chat_template") or "")' "$1"; }

"$BIN/sft_run" --model "$T/smol" --data "$T/sft.jsonl" --max-steps 1 --batch-size 1 --out "$T/out" 2>"$T/a.err"; rc=$?
check "sft_run on the SmolLM2-templated model exits 0 ($(tail -1 $T/a.err))" "[ $rc -eq 0 ]"
check "the exported template is SmolLM2's own" "tmpl $T/out/tokenizer_config.json | grep -q 'You are a helpful AI assistant named SmolLM'"
"$BIN/sft_run" --model "$T/smol" --data "$T/sft.jsonl" --max-steps 1 --batch-size 1 --out "$T/out.ckpt" 2>"$T/b.err"; rc=$?
check "the .ckpt carries the same template" "[ $rc -eq 0 ] && grep -aq 'You are a helpful AI assistant named SmolLM' $T/out.ckpt"
"$BIN/sft_run" --model "$T/smol" --data "$T/sft.jsonl" --max-steps 1 --batch-size 1 --chat-template chatml --out "$T/plain" 2>"$T/d.err"; rc=$?
check "--chat-template chatml exports ChatML without the default system message" "[ $rc -eq 0 ] && tmpl $T/plain/tokenizer_config.json | grep -q im_start && ! tmpl $T/plain/tokenizer_config.json | grep -q 'You are a helpful'"
"$BIN/sft_run" --model "$T/smol" --data "$T/sft.jsonl" --max-steps 1 --batch-size 1 --chat-template hh --out "$T/hh" 2>"$T/c.err"; rc=$?
check "--chat-template hh exports hh" "[ $rc -eq 0 ] && tmpl $T/hh/tokenizer_config.json | grep -q 'Human:' && ! tmpl $T/hh/tokenizer_config.json | grep -q im_start"

# what transformers would render with the exported template = what training tokenized
if python3 -c 'import jinja2' 2>/dev/null; then
    "$BIN/generate" --model "$T/out" --prompts "$T/sft.jsonl" --max-new-tokens 1 --temperature 0 > "$T/g.jsonl" 2>/dev/null
    check "the exported Jinja renders the prompt align rendered" "python3 - $T/out/tokenizer_config.json $T/g.jsonl <<'PY'
import json, sys, jinja2
t = json.load(open(sys.argv[1]))['chat_template']
want = json.loads(open(sys.argv[2]).readline())['prompt']
got = jinja2.Environment().from_string(t).render(messages=[{'role': 'user', 'content': 'say hi'}], add_generation_prompt=True, bos_token='')
sys.exit(0 if got == want else 1)
PY"
else
    echo "skipped the jinja2 check (python3-jinja2 not installed)"
fi

finish
