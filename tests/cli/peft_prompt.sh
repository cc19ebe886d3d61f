#!/usr/bin/env bash
# Prompt tuning and prefix tuning end to end (sft_run, dpo_run, rm_train,
# generate) on the tiny Llama fixture:
#  - sft_run --peft prompt trains only the virtual tokens: the .ckpt holds
#    the base unchanged plus prompt_tuning.prompt_embeddings, and
#    <out>-adapter/ is a PROMPT_TUNING adapter in peft's layout;
#  - --peft prompt --lora-adapter DIR starts from peft's own adapter (with
#    --lr 0 it is saved back unchanged); a prompt/prefix directory given as
#    LoRA, or of the other kind, is refused naming the fix;
#  - --prompt-tuning-init-text: with --lr 0 the virtual tokens stay the
#    text's token embeddings, repeated (peft's TEXT init);
#  - dpo_run --peft prefix: the reference is the base (virtual tokens off),
#    a PREFIX_TUNING adapter is written, and --resume from a periodic
#    checkpoint gives the unbroken run's losses and a bit-identical adapter;
#  - --prefix-projection trains peft's MLP (five tensors in the .ckpt) and
#    saves its output as the adapter;
#  - rm_train --peft prompt trains the virtual tokens and the score head;
#  - generate reads the prompt-tuned .ckpt and its virtual tokens apply;
#  - refusals in one sentence: --out not a .ckpt, --num-virtual-tokens
#    without prompt/prefix, --prompt-tuning-init-text with prefix;
#  - when a Python with peft and transformers is given (ALIGN_PEFT_PYTHON),
#    peft loads the three adapters onto the Hugging Face base and its
#    log-probs of generate's greedy tokens equal align's (1e-4).
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
LLAMA=$HERE/../fixtures/hf_tiny_llama
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

python3 - "$T/sft.jsonl" "$T/prefs.jsonl" "$T/prompts.jsonl" <<'PY'
import json, sys
qa = [("what is two plus two", "four", "five"), ("name a color", "blue", "table"), ("say hi", "hi there", "go away")]
with open(sys.argv[1], "w") as f, open(sys.argv[2], "w") as g:
    for i in range(12):
        q, a, r = qa[i % 3]
        f.write(json.dumps({"question": q, "answer": a}) + "\n")
        g.write(json.dumps({"prompt": q, "chosen": a, "rejected": r}) + "\n")
with open(sys.argv[3], "w") as f:
    for q, _, _ in qa:
        f.write(json.dumps({"prompt": q}) + "\n")
PY
# tensors A B: "name shape" of every tensor of a .ckpt / safetensors file B
# that is new or differs from A's
changed() { python3 - "$1" "$2" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: (b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], v["shape"]) for k, v in h.items() if k != "__metadata__"}
a, b = load(sys.argv[1]), load(sys.argv[2])
for k in sorted(b):
    if k not in a: print("+" + k, *b[k][1])
    elif a[k][0] != b[k][0]: print(k)
PY
}
"$BIN/ckpt_convert" "$LLAMA" "$T/base.ckpt" 2>/dev/null
check "the fixture converts" "[ -f $T/base.ckpt ]"
sft=(--model "$LLAMA" --data "$T/sft.jsonl" --lr 1e-2 --batch-size 4 --max-length 64 --max-steps 3 --chat-template none)

"$BIN/sft_run" "${sft[@]}" --peft prompt --num-virtual-tokens 4 --out "$T/p.ckpt" 2>"$T/p.err"
check "sft_run --peft prompt exits 0" "[ $? -eq 0 ] && grep -q 'prompt tuning, 4 virtual tokens: 128 trainable parameters' $T/p.err"
check "only the virtual tokens changed, the base is kept" "[ \"\$(changed $T/base.ckpt $T/p.ckpt)\" = '+prompt_tuning.prompt_embeddings 4 32' ]"
check "a PROMPT_TUNING adapter in peft's layout" "grep -q '\"PROMPT_TUNING\"' $T/p-adapter/adapter_config.json && [ -f $T/p-adapter/adapter_model.safetensors ]"

"$BIN/sft_run" "${sft[@]}" --lr 0 --peft prompt --num-virtual-tokens 5 --prompt-tuning-init-text "say hi" --out "$T/t.ckpt" 2>"$T/t.err"
check "sft_run --prompt-tuning-init-text exits 0" "[ $? -eq 0 ]"
ids=$(echo "say hi" | "$BIN/tokenize" --model "$LLAMA" 2>/dev/null)
check "the virtual tokens are the text's embeddings, repeated ($ids)" "python3 - $T/t.ckpt $T/base.ckpt '$ids' <<'PY'
import json, struct, sys, array
def tensor(p, name):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); v = h[name]
    a = array.array('f'); a.frombytes(b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]]); return a, v['shape']
p, (nv, d) = tensor(sys.argv[1], 'prompt_tuning.prompt_embeddings')
e, _ = tensor(sys.argv[2], 'model.embed_tokens.weight')
ids = [int(x) for x in sys.argv[3].split()]
sys.exit(0 if all(p[i * d:(i + 1) * d] == e[ids[i % len(ids)] * d:(ids[i % len(ids)] + 1) * d] for i in range(nv)) else 1)
PY"

FIX=$HERE/../fixtures/prompt_learning
"$BIN/sft_run" "${sft[@]}" --lr 0 --peft prompt --lora-adapter "$FIX/llama_prompt_adapter" --out "$T/s.ckpt" 2>"$T/s.err"
check "sft_run starts from peft's own prompt adapter (--lora-adapter)" "[ $? -eq 0 ] && python3 - $FIX/llama_prompt_adapter/adapter_model.safetensors $T/s-adapter/adapter_model.safetensors <<'PY'
import json, struct, sys
def t(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; v = json.loads(b[8:8 + n])['prompt_embeddings']
    return v['shape'], b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]]
sys.exit(0 if t(sys.argv[1]) == t(sys.argv[2]) else 1)
PY"
"$BIN/sft_run" "${sft[@]}" --lora-adapter "$FIX/llama_prefix_adapter" --out "$T/x.ckpt" 2>"$T/e0"
check "a prefix adapter given as LoRA is refused with the fix" "[ $? -ne 0 ] && grep -q 'add --peft prompt or --peft prefix' $T/e0"
"$BIN/sft_run" "${sft[@]}" --peft prompt --lora-adapter "$FIX/llama_prefix_adapter" --out "$T/x.ckpt" 2>"$T/e00"
check "a prefix adapter under --peft prompt is refused" "[ $? -ne 0 ] && grep -q 'holds prefix tuning' $T/e00"

# the projection: embedding 3x16, Linear 16->16, Linear 16->64 (2 layers x k,v x 2 heads x 8)
"$BIN/sft_run" "${sft[@]}" --peft prefix --num-virtual-tokens 3 --prefix-projection --out "$T/j.ckpt" 2>"$T/j.err"
check "sft_run --peft prefix --prefix-projection exits 0" "[ $? -eq 0 ] && grep -q 'prefix tuning (projected), 3 virtual tokens: 1408 trainable' $T/j.err"
check "the adapter holds the projection's output" "grep -Eq '\"prefix_projection\":[[:space:]]*true' $T/j-adapter/adapter_config.json"
check "the .ckpt keeps the five tensors" "[ \"\$(changed $T/base.ckpt $T/j.ckpt | cut -d' ' -f1 | tr '\n' ' ')\" = '+prefix_tuning.embedding.weight +prefix_tuning.transform.0.bias +prefix_tuning.transform.0.weight +prefix_tuning.transform.2.bias +prefix_tuning.transform.2.weight ' ]"

dpo=(--policy "$LLAMA" --data "$T/prefs.jsonl" --lr 1e-2 --batch-size 2 --max-length 64 --chat-template none --peft prefix
     --num-virtual-tokens 3)
"$BIN/dpo_run" "${dpo[@]}" --max-steps 4 --save-every 2 --out "$T/a.ckpt" --metrics "$T/a.jsonl" 2>"$T/a.err"
check "dpo_run --peft prefix exits 0" "[ $? -eq 0 ] && grep -q 'prefix tuning, 3 virtual tokens: 192 trainable' $T/a.err"
check "the reference is the base, virtual tokens off" "grep -q 'reference = the base model (virtual tokens off)' $T/a.err"
check "a PREFIX_TUNING adapter" "grep -q '\"PREFIX_TUNING\"' $T/a-adapter/adapter_config.json"
"$BIN/dpo_run" "${dpo[@]}" --max-steps 4 --out "$T/b.ckpt" --metrics "$T/b.jsonl" --resume "$T/a-step2.ckpt" 2>"$T/b.err"
check "resume exits 0" "[ $? -eq 0 ]"
check "resumed losses equal the unbroken run's" "diff <(tail -2 $T/a.jsonl | cut -d, -f1-3) <(cut -d, -f1-3 $T/b.jsonl)"
check "resumed virtual tokens bit-identical" "cmp -s $T/a-adapter/adapter_model.safetensors $T/b-adapter/adapter_model.safetensors"

"$BIN/rm_train" --model "$LLAMA" --data "$T/prefs.jsonl" --lr 1e-2 --batch-size 2 --max-length 64 --max-steps 2 \
  --chat-template none --peft prompt --num-virtual-tokens 2 --out "$T/rm.ckpt" 2>"$T/rm.err"
check "rm_train --peft prompt exits 0" "[ $? -eq 0 ]"
check "the virtual tokens and the score head trained, the base kept" "[ \"\$(changed $T/base.ckpt $T/rm.ckpt | cut -d' ' -f1 | sort | tr '\n' ' ')\" = '+prompt_tuning.prompt_embeddings +score.weight ' ]"

"$BIN/generate" --model "$T/p.ckpt" --prompts "$T/prompts.jsonl" --temperature 0 --max-new-tokens 6 --chat-template none --out "$T/gp.jsonl" 2>/dev/null
"$BIN/generate" --model "$LLAMA" --prompts "$T/prompts.jsonl" --temperature 0 --max-new-tokens 6 --chat-template none --out "$T/gb.jsonl" 2>/dev/null
check "generate reads the prompt-tuned .ckpt and its virtual tokens apply" "[ -s $T/gp.jsonl ] && ! cmp -s $T/gp.jsonl $T/gb.jsonl"

"$BIN/sft_run" "${sft[@]}" --peft prompt --out "$T/hf-dir" 2>"$T/e1"
check "--peft prompt with a directory --out refused" "[ $? -ne 0 ] && grep -q 'goes to a .ckpt' $T/e1 && [ \$(wc -l < $T/e1) -le 3 ]"
"$BIN/sft_run" "${sft[@]}" --num-virtual-tokens 4 --out "$T/x.ckpt" 2>"$T/e2"
check "--num-virtual-tokens without prompt/prefix refused" "[ $? -ne 0 ] && grep -q 'is for --peft prompt or prefix' $T/e2"
"$BIN/sft_run" "${sft[@]}" --peft prefix --prompt-tuning-init-text hi --out "$T/x.ckpt" 2>"$T/e3"
check "--prompt-tuning-init-text with prefix refused" "[ $? -ne 0 ] && grep -q 'is for --peft prompt' $T/e3"

PY=${ALIGN_PEFT_PYTHON:-python3}
if "$PY" -c 'import peft, torch, transformers' 2>/dev/null; then
    "$BIN/generate" --model "$T/a.ckpt" --prompts "$T/prompts.jsonl" --temperature 0 --max-new-tokens 6 --chat-template none --out "$T/ga.jsonl" 2>/dev/null
    "$BIN/generate" --model "$T/j.ckpt" --prompts "$T/prompts.jsonl" --temperature 0 --max-new-tokens 6 --chat-template none --out "$T/gj.jsonl" 2>/dev/null
    for run in "p gp" "a ga" "j gj"; do
        set -- $run
        OMP_NUM_THREADS=1 "$PY" - "$LLAMA" "$T/$1-adapter" "$T/$2.jsonl" "$BIN/tokenize" >"$T/peft-$1.out" 2>"$T/peft-$1.err" <<'PY'
import json, subprocess, sys
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32, attn_implementation="eager")
model = PeftModel.from_pretrained(base, sys.argv[2]).eval()
worst = 0.0
for line in open(sys.argv[3]):
    r = json.loads(line)
    ids = [int(x) for x in subprocess.run([sys.argv[4], "--model", sys.argv[1]], input=r["prompt"] + "\n", text=True,
                                          capture_output=True, check=True).stdout.split()]
    seq = ids + r["tokens"]
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0, -len(seq):], -1)
    for k, t in enumerate(r["tokens"]):
        worst = max(worst, abs(lp[len(ids) + k - 1, t].item() - r["logprobs"][k]))
print(worst)
sys.exit(0 if worst < 1e-4 else 1)
PY
        rc=$?
        echo "peft vs align, $1 adapter: largest log-prob difference $(cat $T/peft-$1.out)"
        check "peft loads align's $1 adapter: its log-probs of generate's tokens match" "[ $rc -eq 0 ]"
    done
else
    echo "(no Python with peft: the peft round trip is skipped; set ALIGN_PEFT_PYTHON)"
fi

finish
