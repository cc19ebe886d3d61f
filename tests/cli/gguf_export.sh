#!/usr/bin/env bash
# ckpt_convert HF_DIR OUT.gguf --type T end to end on the tiny fixtures:
#  - every type (f32, f16, bf16, q8_0, q4_0, q4_k_m) converts, the file reads back
#    through align (ckpt_convert OUT.gguf x.ckpt), a .ckpt converts to GGUF
#    too, and bad --type uses are one clear error each;
#  - the `gguf` PyPI package's reader (tests/gguf_check.py) checks every
#    tensor against the Hugging Face weights as convert_hf_to_gguf.py would
#    write them (permutation, type, quantised bytes) and the tokenizer and
#    chat-template keys. That part needs numpy + gguf: the python of
#    ALIGN_GGUF_PYTHON, a .venv*/ at the repository root, or python3,
#    whichever imports it;
#  - llama.cpp (llama-cpp-python: tests/gguf_llamacpp_check.py) loads every
#    type and computes what align computes on the same file: the same prompt
#    ids, align's greedy tokens, log-probs within a per-type tolerance.
#    Needs a python importing llama_cpp, found the same way.
#  Without either python the test exits 77 (skipped) after all the checks
#  it could run.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

# hf_tiny_llama without its Llama-3.1 rope scaling (GGUF export refuses that)
cp -r "$HERE/../fixtures/hf_tiny_llama" "$T/llama"
sed -i '/"rope_scaling": {/,/},/d' "$T/llama/config.json"
check "the llama fixture lost its rope_scaling" "! grep -q rope_scaling $T/llama/config.json"
for t in f32 f16 bf16 q8_0 q4_0 q4_k_m; do
    "$BIN/ckpt_convert" "$T/llama" "$T/llama_$t.gguf" --type "$t" 2>"$T/err"
    check "ckpt_convert --type $t exits 0" "[ $? -eq 0 ]"
    check "llama_$t.gguf starts with GGUF" "[ \"\$(head -c 4 $T/llama_$t.gguf)\" = GGUF ]"
    "$BIN/ckpt_convert" "$T/llama_$t.gguf" "$T/back_$t.ckpt" 2>"$T/err"
    check "llama_$t.gguf reads back" "[ $? -eq 0 ] && grep -q 'wrote $T/back_$t.ckpt (llama, 2 layers, dim 32, vocab 300' $T/err"
done
"$BIN/ckpt_convert" "$HERE/../fixtures/hf_tiny_qwen2" "$T/qwen2.gguf" --type q8_0 2>"$T/err"
check "qwen2 -> q8_0 GGUF" "[ $? -eq 0 ]"
"$BIN/ckpt_convert" "$HERE/../fixtures/hf_tiny_qwen2" "$T/qwen2_k.gguf" --type q4_k_m 2>"$T/err"
check "qwen2 -> q4_k_m GGUF (tied embeddings)" "[ $? -eq 0 ]"
"$BIN/ckpt_convert" "$HERE/../fixtures/hf_tiny_gpt2" "$T/gpt2.gguf" 2>"$T/err"
check "gpt2 -> GGUF (f16 default)" "[ $? -eq 0 ]"
"$BIN/ckpt_convert" "$T/back_f32.ckpt" "$T/from_ckpt.gguf" --type f32 2>"$T/err"
check ".ckpt -> GGUF" "[ $? -eq 0 ]"
# the same tensors as the direct conversion (the data section: the last
# bytes, after a header of about 8 KB: vocabulary, merges, chat template)
n=$(( $(stat -c %s "$T/llama_f32.gguf") - 16384 ))
check ".ckpt -> GGUF: the tensor data of HF -> GGUF" "cmp -s <(tail -c $n $T/from_ckpt.gguf) <(tail -c $n $T/llama_f32.gguf)"
"$BIN/ckpt_convert" "$T/llama" "$T/x.gguf" --type q5_k_m 2>"$T/err"
check "--type q5_k_m is refused naming the types" "[ $? -ne 0 ] && grep -q \"unknown GGUF type 'q5_k_m' (expected f32, f16, bf16, q8_0, q4_0 or q4_k_m)\" $T/err && [ ! -e $T/x.gguf ]"
"$BIN/ckpt_convert" "$T/llama" "$T/x.ckpt" --type q8_0 2>"$T/err"
check "--type with a .ckpt output is refused" "[ $? -ne 0 ] && grep -q 'OUT must be a .gguf file' $T/err"
"$BIN/ckpt_convert" "$HERE/../fixtures/hf_tiny_llama" "$T/x.gguf" 2>"$T/err"
check "Llama-3.1 rope scaling is refused" "[ $? -ne 0 ] && grep -q 'rope scaling' $T/err && [ ! -e $T/x.gguf ] && [ ! -e $T/x.gguf.tmp ]"

# the optional parts: a python importing gguf + numpy (the file as
# convert_hf_to_gguf.py writes it) and one importing llama_cpp (the file
# loads in llama.cpp and computes what align computes:
# tests/gguf_llamacpp_check.py); each runs when such a python is found
find_py() { # find_py MODULES: the first candidate importing them
    for cand in ${ALIGN_GGUF_PYTHON:-} "$ROOT"/.venv*/bin/python python3; do
        if [ -x "$(command -v "$cand" 2>/dev/null)" ] && "$cand" -c "import $1" 2>/dev/null; then echo "$cand"; return; fi
    done
}
py=$(find_py "gguf, numpy")
lpy=$(find_py "llama_cpp, numpy")
echo "$pass passed, $fail failed (without the optional python parts)"
[ "$fail" -eq 0 ] || exit 1
if [ -n "$py" ]; then
    for t in f32 f16 bf16 q8_0 q4_0 q4_k_m; do
        "$py" "$HERE/../gguf_check.py" "$T/llama" "$T/llama_$t.gguf" "$t"
        check "gguf reader: llama_$t.gguf is what convert_hf_to_gguf.py writes" "[ $? -eq 0 ]"
    done
    "$py" "$HERE/../gguf_check.py" "$HERE/../fixtures/hf_tiny_qwen2" "$T/qwen2.gguf" q8_0
    check "gguf reader: qwen2.gguf (unpermuted, biases)" "[ $? -eq 0 ]"
    "$py" "$HERE/../gguf_check.py" "$HERE/../fixtures/hf_tiny_qwen2" "$T/qwen2_k.gguf" q4_k_m
    check "gguf reader: qwen2_k.gguf (the tied embedding typed as the head)" "[ $? -eq 0 ]"
fi
if [ -n "$lpy" ]; then
    for t in f32 f16 bf16 q8_0 q4_0 q4_k_m; do
        "$lpy" "$HERE/../gguf_llamacpp_check.py" "$BIN" "$T/llama_$t.gguf" "$t"
        check "llama.cpp: llama_$t.gguf loads, same prompt ids, align's greedy tokens and log-probs" "[ $? -eq 0 ]"
    done
    "$lpy" "$HERE/../gguf_llamacpp_check.py" "$BIN" "$T/qwen2.gguf" q8_0
    check "llama.cpp: qwen2.gguf (q8_0, biases)" "[ $? -eq 0 ]"
fi
if [ -z "$py" ] || [ -z "$lpy" ]; then
    [ -z "$py" ] && echo "skipped part: no python with the gguf package (set ALIGN_GGUF_PYTHON or make a .venv with gguf and numpy)"
    [ -z "$lpy" ] && echo "skipped part: no python with llama_cpp (python3 -m venv .venv-llama && .venv-llama/bin/pip install llama-cpp-python)"
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ] || exit 1
    exit 77
fi
finish
