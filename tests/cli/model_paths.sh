#!/usr/bin/env bash
# Model paths as a new user types them (tiny Qwen2 fixture, no training
# beyond the argument checks). Saving:
#  - ckpt_convert x.safetensors (or sft_run --out model.bin) is one sentence
#    naming what align writes, not a directory called x.safetensors;
#  - OUT in a directory that does not exist is named before IN is read;
#  - x.GGUF is a GGUF (any case), read back by generate;
#  - sft_run --out x.gguf points to ckpt_convert instead of "not supported".
# Loading: a GGUF renamed .ckpt loads as the GGUF it is; a PyTorch
# checkpoint named .ckpt is said to be one.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../fixtures/hf_tiny_qwen2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"
cd "$T" || exit 1

"$BIN/ckpt_convert" "$MODEL" x.safetensors 2>a.err; rc=$?
check "x.safetensors is refused naming the formats ($(tail -1 a.err))" \
    "[ $rc -eq 1 ] && [ ! -e x.safetensors ] && grep -q 'x.safetensors: names a .safetensors file; align writes a .ckpt, a .gguf' a.err"
"$BIN/ckpt_convert" "$MODEL" no/such/dir/x.gguf --type q8_0 2>b.err; rc=$?
check "a missing OUT directory is named ($(tail -1 b.err))" \
    "[ $rc -eq 1 ] && grep -q 'OUT no/such/dir/x.gguf: the directory no/such/dir does not exist' b.err"
"$BIN/ckpt_convert" "$MODEL" x.GGUF --type q8_0 2>c.err; rc=$?
check "x.GGUF is written as GGUF ($(tail -1 c.err))" "[ $rc -eq 0 ] && [ \"\$(head -c 4 x.GGUF)\" = GGUF ]"
check "the summary names a Qwen2 model qwen2, not llama" "grep -q 'wrote x.GGUF (qwen2, 2 layers' c.err"
printf '{"prompt": "hi"}\n' > p.jsonl
"$BIN/generate" --model x.GGUF --prompts p.jsonl --max-new-tokens 2 >g.jsonl 2>g.err; rc=$?
check "generate reads x.GGUF ($(tail -1 g.err))" "[ $rc -eq 0 ] && [ \$(wc -l < g.jsonl) -eq 1 ]"
printf '{"question": "q", "answer": "a"}\n' > qa.jsonl
"$BIN/sft_run" --model "$MODEL" --data qa.jsonl --out model.bin --max-steps 1 2>d.err; rc=$?
check "sft_run --out model.bin is refused ($(tail -1 d.err))" \
    "[ $rc -ne 0 ] && [ ! -e model.bin ] && grep -q 'model.bin: names a .bin file' d.err"
"$BIN/sft_run" --model "$MODEL" --data qa.jsonl --out sft.gguf --max-steps 1 2>e.err; rc=$?
check "sft_run --out sft.gguf says how to get a GGUF ($(tail -1 e.err))" \
    "[ $rc -ne 0 ] && grep -q 'ckpt_convert OUT.ckpt sft.gguf --type q8_0' e.err"
"$BIN/ckpt_convert" "$MODEL" m.gguf --type f32 2>/dev/null && cp m.gguf renamed.ckpt
"$BIN/generate" --model renamed.ckpt --prompts p.jsonl --max-new-tokens 2 >h.jsonl 2>h.err; rc=$?
check "a GGUF named .ckpt loads ($(tail -1 h.err))" "[ $rc -eq 0 ] && [ \$(wc -l < h.jsonl) -eq 1 ]"
printf 'PK\003\004 a zip of pickles' > lightning.ckpt
"$BIN/ckpt_convert" lightning.ckpt x.gguf 2>i.err; rc=$?
check "a PyTorch .ckpt is named ($(tail -1 i.err))" \
    "[ $rc -eq 1 ] && grep -q 'lightning.ckpt is a PyTorch checkpoint (pickle), which align does not read' i.err"
finish
