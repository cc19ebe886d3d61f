#!/usr/bin/env bash
# Qwen3 and Phi-3 through the programs, on the tiny fixtures of
# tests/fixtures/family (make_family_fixtures.py): sft_run trains each from
# its Hugging Face directory and from its GGUF file (the loss falls),
# generate samples from the result, and ckpt_convert writes a Hugging Face
# directory that names the family (Phi-3's tensors fused again). Phi-3.5's
# longrope and Phi-4-mini's partial rotary (phi3_longrope, phi3_partial)
# the same way; their generations run past original_max (16 positions), and
# the export keeps rope_scaling and partial_rotary_factor.
# usage: bash model_families.sh BIN_DIR
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

python3 - "$T/sft.jsonl" <<'PY'
import json, sys
qa = [("say hi", "hi there"), ("name a color", "blue"), ("what is two plus two", "four")]
with open(sys.argv[1], "w") as f:
    for i in range(24):
        q, a = qa[i % 3]
        f.write(json.dumps({"question": q, "answer": a}) + "\n")
PY
printf '{"prompt": "hello world"}\n{"prompt": "the quick brown fox"}\n' > "$T/p.jsonl"
loss() { sed -n "$1p" "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["loss"])'; }

for fam in qwen3 phi3 phi3_longrope phi3_partial; do
  mt=${fam%%_*}
  DIR=$HERE/../fixtures/family/$fam
  for src in "$DIR" "$DIR/model.gguf"; do
    name=$fam-$(basename "$src")
    "$BIN/sft_run" --model "$src" --data "$T/sft.jsonl" --lr 1e-2 --batch-size 4 --max-steps 12 \
      --out "$T/$name.ckpt" --metrics "$T/$name.jsonl" 2>"$T/$name.err"
    rc=$?
    check "$name: sft_run exits 0 ($(tail -1 "$T/$name.err"))" "[ $rc -eq 0 ]"
    first=$(loss 1 "$T/$name.jsonl") last=$(loss 12 "$T/$name.jsonl")
    check "$name: loss falls ($first -> $last)" "python3 -c 'import sys; sys.exit(0 if $last < 0.8 * $first else 1)'"
  done
  "$BIN/generate" --model "$T/$fam-$fam.ckpt" --prompts "$T/p.jsonl" --temperature 0 --max-new-tokens 16 \
    >"$T/$fam.gen" 2>"$T/$fam.gerr"
  rc=$?
  check "$fam: generate writes a completion per prompt ($(tail -1 "$T/$fam.gerr"))" \
    "[ $rc -eq 0 ] && [ \$(grep -c '\"finish_reason\"' '$T/$fam.gen') -eq 2 ]"
  "$BIN/ckpt_convert" "$T/$fam-$fam.ckpt" "$T/$fam-hf" 2>/dev/null
  check "$fam: the exported config.json says model_type $mt" "grep -q '\"model_type\":[[:space:]]*\"$mt\"' '$T/$fam-hf/config.json'"
done
check "phi3: the export fuses qkv_proj and gate_up_proj" \
  "grep -q 'qkv_proj' '$T/phi3-hf/model.safetensors' && grep -q 'gate_up_proj' '$T/phi3-hf/model.safetensors' && ! grep -q 'q_proj' '$T/phi3-hf/model.safetensors'"
check "phi3_longrope: the export keeps longrope" "grep -q '\"longrope\"' '$T/phi3_longrope-hf/config.json'"
check "phi3_partial: the export keeps partial_rotary_factor 0.5" \
  "grep -q '\"partial_rotary_factor\":[[:space:]]*0.5' '$T/phi3_partial-hf/config.json'"
check "qwen3: the export keeps q_norm and k_norm" "grep -q 'self_attn.q_norm' '$T/qwen3-hf/model.safetensors'"
finish model_families
