#!/usr/bin/env bash
# ckpt_convert HF_DIR OUT.gguf --type T end to end on the tiny fixtures:
#  - every type (f32, f16, bf16, q8_0, q4_0, q4_k_m) converts, the file reads back
#    through align (ckpt_convert OUT.gguf x.ckpt), a .ckpt converts to GGUF
#    too, and bad --type uses are one clear error each;
#  - every family (Qwen3, Phi-3 with longrope / partial rotary, Gemma 2/3,
#    Llama, Qwen2, GPT-2) at f32, f16 and q8_0 reads back through align with
#    the fixture's greedy tokens and log-probs (f32: bit for bit);
#  - the `gguf` PyPI package's reader (tests/gguf_check.py) checks every
#    tensor against the Hugging Face weights as convert_hf_to_gguf.py would
#    write them (permutation, names, Gemma's norms + 1, type, quantised
#    bytes) and the tokenizer and chat-template keys. That part needs
#    numpy + gguf: the python of ALIGN_GGUF_PYTHON, a .venv*/ at the
#    repository root, or python3, whichever imports it;
#  - llama.cpp (llama-cpp-python: tests/gguf_llamacpp_check.py) loads every
#    type and computes what align computes on the same file: the same prompt
#    ids, align's greedy tokens, log-probs within a per-type tolerance, and
#    transformers' reference log-probs where the fixture's hold.
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

# Every family align trains, f32 / f16 / q8_0, read back by align: for f32
# greedy tokens and their log-probs (generate --temperature 0) equal to the
# Hugging Face fixture's, bit for bit (Gemma's norms go out as 1 + w and
# come back as the same 1 + w); for f16 and q8_0 the teacher-forced
# log-probs of two completions (logprobs) within f16's / Q8_0's rounding of
# the f32 file's, per token (greedy tokens of these tiny random models
# have near ties that Q8_0 flips). NAME:DIR, a fixture or a copy made here:
#  - phi3_full: the Phi-3 fixture without its sliding window (5), which
#    llama.cpp's phi3 switches off ("Phi SWA is currently disabled"): the
#    fixture itself round-trips, the copy goes to llama.cpp;
#  - gemma2_hd: the Gemma 2 fixture with query_pre_attn_scalar = head_dim
#    (8): llama.cpp derives the scale from head_dim and has no key for
#    another (the fixture's 6 is refused: cli/gemma.sh).
FIX=$HERE/../fixtures
cp -r "$FIX/family/phi3" "$T/phi3_full"
sed -i 's/"sliding_window": 5/"sliding_window": null/' "$T/phi3_full/config.json"
cp -r "$FIX/gemma/gemma2" "$T/gemma2_hd"
sed -i 's/"query_pre_attn_scalar": 6/"query_pre_attn_scalar": 8/' "$T/gemma2_hd/config.json"
check "the copies changed" "grep -q '\"sliding_window\": null' $T/phi3_full/config.json && grep -q '\"query_pre_attn_scalar\": 8' $T/gemma2_hd/config.json"
FAMS="qwen3:$FIX/family/qwen3 phi3:$FIX/family/phi3 phi3_full:$T/phi3_full phi3_longrope:$FIX/family/phi3_longrope
      phi3_partial:$FIX/family/phi3_partial gemma2_hd:$T/gemma2_hd gemma3:$FIX/gemma/gemma3 llama:$T/llama
      qwen2:$FIX/hf_tiny_qwen2 gpt2:$FIX/hf_tiny_gpt2"
echo '{"prompt": "Hello there, general"}' > "$T/p.jsonl"
gen() { OMP_NUM_THREADS=1 "$BIN/generate" --model "$1" --prompts "$T/p.jsonl" --chat-template none --temperature 0 \
          --max-new-tokens 8 > "$2" 2>"$T/err"; }
printf '%s\n' '{"prompt": "Hello there,", "completion": " general Kenobi"}' \
    '{"prompt": "The quick", "completion": " brown fox jumps"}' > "$T/sft.jsonl"
lp() { OMP_NUM_THREADS=1 "$BIN/logprobs" --model "$1" --data "$T/sft.jsonl" --chat-template none > "$2" 2>"$T/err"; }
same() { # same KIND A.jsonl B.jsonl TOL: gen: same tokens and log-probs (TOL 0: equal); lp: sums within TOL a token
    python3 - "$@" <<'PY'
import json, sys
kind, tol = sys.argv[1], float(sys.argv[4])
a, b = ([json.loads(l) for l in open(f)] for f in sys.argv[2:4])
if kind == "gen":
    d = max(abs(x - y) for x, y in zip(a[0]["logprobs"], b[0]["logprobs"]))
    ok = a[0]["tokens"] == b[0]["tokens"] and d <= tol
else:
    d = max(abs(x["logp"] - y["logp"]) / x["tokens"] for x, y in zip(a, b))
    ok = len(a) == len(b) == 2 and all(x["tokens"] == y["tokens"] for x, y in zip(a, b)) and d <= tol
print("%s: log-probs within %.2g a token" % (sys.argv[3].rsplit("/", 1)[-1], d))
sys.exit(0 if ok else 1)
PY
}
for fam in $FAMS; do
    n=${fam%%:*} dir=${fam#*:}
    gen "$dir" "$T/$n.hf.jsonl"
    check "$n: generate on the Hugging Face fixture" "[ $? -eq 0 ]"
    for t in f32 f16 q8_0; do
        "$BIN/ckpt_convert" "$dir" "$T/${n}_$t.gguf" --type $t 2>"$T/err"
        check "$n -> $t GGUF ($(tail -1 "$T/err"))" "[ $? -eq 0 ]"
        if [ $t = f32 ]; then
            gen "$T/${n}_$t.gguf" "$T/$n.$t.jsonl"
            check "$n f32: align reads its GGUF back: greedy tokens and log-probs equal" "same gen $T/$n.hf.jsonl $T/$n.$t.jsonl 0"
            lp "$T/${n}_$t.gguf" "$T/$n.lp.$t.jsonl"
        else
            lp "$T/${n}_$t.gguf" "$T/$n.lp.$t.jsonl"
            tol=$([ $t = f16 ] && echo 0.01 || echo 0.1)
            check "$n $t: teacher-forced log-probs within $tol a token of the f32 file's" "same lp $T/$n.lp.f32.jsonl $T/$n.lp.$t.jsonl $tol"
        fi
    done
done
grep -q 'llama.cpp runs' "$T/err" # (the last family is GPT-2: no window, no note)
check "no sliding-window note for GPT-2" "[ $? -ne 0 ]"
"$BIN/ckpt_convert" "$FIX/family/phi3" "$T/x.gguf" 2>"$T/err"
check "Phi-3's window: a note that llama.cpp attends to everything" "[ $? -eq 0 ] && grep -q 'llama.cpp runs its sliding window (5 tokens) as full attention' $T/err"

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
    for fam in $FAMS; do # the families' names, Gemma's norms + 1, Phi's longrope factors
        n=${fam%%:*} dir=${fam#*:}
        case $n in llama|gpt2) continue ;; esac
        for t in f16 q8_0; do
            "$py" "$HERE/../gguf_check.py" "$dir" "$T/${n}_$t.gguf" $t
            check "gguf reader: ${n}_$t.gguf is what convert_hf_to_gguf.py writes" "[ $? -eq 0 ]"
        done
    done
fi
if [ -n "$lpy" ]; then
    for t in f32 f16 bf16 q8_0 q4_0 q4_k_m; do
        "$lpy" "$HERE/../gguf_llamacpp_check.py" "$BIN" "$T/llama_$t.gguf" "$t"
        check "llama.cpp: llama_$t.gguf loads, same prompt ids, align's greedy tokens and log-probs" "[ $? -eq 0 ]"
    done
    "$lpy" "$HERE/../gguf_llamacpp_check.py" "$BIN" "$T/qwen2.gguf" q8_0
    check "llama.cpp: qwen2.gguf (q8_0, biases)" "[ $? -eq 0 ]"
    # every family at f16 and q8_0; where the fixture's reference.json holds
    # for the exported model, llama.cpp's log-probs of its sequences against
    # transformers' too (not for the copies changed above, the llama copy
    # without its rope scaling, nor Phi-3's window, which its 14-token
    # sequences exceed); GPT-2's 32 positions take a shorter prompt
    for fam in $FAMS; do
        n=${fam%%:*} dir=${fam#*:}
        [ "$n" = phi3 ] && continue
        ref=() text=()
        [ "$dir" = "${dir#$T}" ] && ref=(--reference "$dir/reference.json")
        [ "$n" = gpt2 ] && text=("The quick brown fox")
        for t in f16 q8_0; do
            "$lpy" "$HERE/../gguf_llamacpp_check.py" "$BIN" "$T/${n}_$t.gguf" $t "${text[@]}" "${ref[@]}" 2>"$T/lerr"
            rc=$? what=""
            [ ${#ref[@]} -gt 0 ] && what=", transformers' reference log-probs"
            check "llama.cpp: ${n}_$t.gguf loads, same prompt ids, align's greedy tokens and log-probs$what" "[ $rc -eq 0 ]"
        done
    done
    # a real Gemma 3 (SentencePiece tokenizer: "llama" with scores) when
    # scripts/fetch-gemma3-270m.sh has fetched it: its Q4_K_M file -> f16
    G270=$ROOT/cache/gemma-3-270m-q4_k_m.gguf
    if [ -f "$G270" ]; then
        "$BIN/ckpt_convert" "$G270" "$T/g270.gguf" --type f16 2>"$T/err"
        check "gemma-3-270m -> f16 GGUF" "[ $? -eq 0 ]"
        "$lpy" "$HERE/../gguf_llamacpp_check.py" "$BIN" "$T/g270.gguf" f16 "The capital of France is" 2>"$T/lerr"
        check "llama.cpp: gemma-3-270m f16 from align: same prompt ids, align's greedy tokens and log-probs" "[ $? -eq 0 ]"
        rm -f "$T/g270.gguf"
    else
        echo "skipped part: $G270 is not present (scripts/fetch-gemma3-270m.sh)"
    fi
fi
if [ -z "$py" ] || [ -z "$lpy" ]; then
    [ -z "$py" ] && echo "skipped part: no python with the gguf package (set ALIGN_GGUF_PYTHON or make a .venv with gguf and numpy)"
    [ -z "$lpy" ] && echo "skipped part: no python with llama_cpp (python3 -m venv .venv-llama && .venv-llama/bin/pip install llama-cpp-python)"
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ] || exit 1
    exit 77
fi
finish
