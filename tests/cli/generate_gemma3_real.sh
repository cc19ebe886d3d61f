#!/usr/bin/env bash
# generate with the real Gemma 3 270M, a base model whose tokenizer adds
# <bos> (cache/gemma-3-270m-q4_k_m.gguf, fetched by
# scripts/fetch-gemma3-270m.sh; without it this prints "skipped" and exits
# 77): a raw prompt with --chat-template none decodes greedily to
# transformers' continuation (tests/fixtures/gemma/gemma3_270m_reference.json,
# its prompt ids start with <bos>): the first 8 tokens equal (generate runs
# the GGUF's blocks with int8 inputs as llama.cpp, transformers fp32: later
# near-ties may go either way). Without the <bos> the model writes garbage.
# usage: bash generate_gemma3_real.sh BIN_DIR
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../../cache/gemma-3-270m-q4_k_m.gguf
REF=$HERE/../fixtures/gemma/gemma3_270m_reference.json
if [ ! -s "$MODEL" ]; then
    echo "skipped: $MODEL is not present (scripts/fetch-gemma3-270m.sh fetches it)"
    exit 77
fi
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

python3 -c "import json,sys; print(json.dumps({'prompt': json.load(open(sys.argv[1]))['text']}))" "$REF" > "$T/p.jsonl"
"$BIN/generate" --model "$MODEL" --prompts "$T/p.jsonl" --chat-template none --temperature 0 \
    --max-new-tokens 12 > "$T/out" 2>"$T/err"
check "generate exits 0 ($(tail -1 "$T/err"))" "[ -s $T/out ]"
check "greedy from the raw prompt: the first 8 tokens are transformers' ($(head -c 300 "$T/out"))" "python3 - $T/out $REF <<'PY'
import json, sys
got = json.loads(open(sys.argv[1]).readline())['tokens']
want = json.load(open(sys.argv[2]))['greedy']
same = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
print(f'gemma3 270M generate: {same} of {len(want)} greedy tokens as transformers')
sys.exit(0 if same >= 8 else 1)
PY"
finish
