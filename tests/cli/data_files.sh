#!/usr/bin/env bash
# CSV, TSV and Excel data files train like JSONL (tiny Qwen2 fixture):
#  - sft_run --data qa.csv trains, with the same losses step for step as
#    the JSONL that Python's csv module makes of the same file;
#  - dpo_run --data prefs.xlsx (first sheet) and sft_run --sheet qa train,
#    with the losses of the JSONL written by hand from the workbook;
#  - rm_train --data prefs.tsv trains; generate --prompts qa.csv samples;
#  - rm_score, logprobs and generate read .tsv/.xlsx (--sheet) records too;
#  - a bad cell or a missing sheet stops with "file:row: column ..." / the
#    sheet names, exit 1.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../fixtures/hf_tiny_qwen2
TAB=$HERE/../fixtures/tables
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"
losses() { python3 -c 'import json,sys; print(" ".join("%.6g" % json.loads(l)["loss"] for l in open(sys.argv[1])))' "$1"; }

python3 - "$TAB/qa.csv" "$T/qa.jsonl" <<'PY'
import csv, json, sys
with open(sys.argv[1], newline="", encoding="utf-8-sig") as f, open(sys.argv[2], "w") as out:
    for row in csv.DictReader(f):
        if any(row.values()):
            out.write(json.dumps({"question": row["question"], "answer": row["answer"]}) + "\n")
PY
cat > "$T/prefs.jsonl" <<'J'
{"prompt": "Name a color.", "chosen": "Bold move", "rejected": "No.", "margin": 1.5}
{"prompt": "Say hi.", "chosen": "Hi there!", "rejected": "Go & stay away."}
{"prompt": "Count to three.", "chosen": "one two three", "rejected": "four", "margin": 0.1}
J
cat > "$T/qa_sheet.jsonl" <<'J'
{"question": "What is 6*7?", "answer": "42"}
{"question": "What is 1/10?", "answer": "0.1"}
{"question": "Is water wet?", "answer": "TRUE"}
J
sft=(--model "$MODEL" --lr 1e-2 --batch-size 2 --max-length 64 --max-steps 6)

"$BIN/sft_run" "${sft[@]}" --data "$TAB/qa.csv" --out "$T/a.ckpt" --metrics "$T/a.jsonl" 2>"$T/a.err"; rc=$?
check "sft_run --data qa.csv exits 0 ($(tail -1 "$T/a.err"))" "[ $rc -eq 0 ] && [ -f $T/a.ckpt ]"
check "qa.csv: 4 examples" "grep -q 'qa.csv: 4 examples' $T/a.err"
"$BIN/sft_run" "${sft[@]}" --data "$T/qa.jsonl" --out "$T/b.ckpt" --metrics "$T/b.jsonl" 2>"$T/b.err"
check "qa.csv losses equal its JSONL's ($(losses "$T/a.jsonl"))" "[ -s $T/a.jsonl ] && [ \"\$(losses $T/a.jsonl)\" = \"\$(losses $T/b.jsonl)\" ]"
check "the loss falls" "python3 -c 'import sys; l=[float(x) for x in sys.argv[1:]]; sys.exit(0 if l[-1] < l[0] else 1)' $(losses "$T/a.jsonl")"

dpo=(--policy "$MODEL" --lr 1e-2 --batch-size 2 --max-length 64 --max-steps 3)
"$BIN/dpo_run" "${dpo[@]}" --data "$TAB/prefs.xlsx" --out "$T/c.ckpt" --metrics "$T/c.jsonl" 2>"$T/c.err"; rc=$?
check "dpo_run --data prefs.xlsx exits 0 ($(tail -1 "$T/c.err"))" "[ $rc -eq 0 ] && [ -f $T/c.ckpt ] && grep -q 'prefs.xlsx: 3 examples' $T/c.err"
"$BIN/dpo_run" "${dpo[@]}" --data "$T/prefs.jsonl" --out "$T/d.ckpt" --metrics "$T/d.jsonl" 2>"$T/d.err"
check "prefs.xlsx losses equal the JSONL's ($(losses "$T/c.jsonl"))" "[ -s $T/c.jsonl ] && [ \"\$(losses $T/c.jsonl)\" = \"\$(losses $T/d.jsonl)\" ]"

"$BIN/sft_run" "${sft[@]}" --max-steps 2 --data "$TAB/prefs.xlsx" --sheet qa --out "$T/e.ckpt" --metrics "$T/e.jsonl" 2>"$T/e.err"; rc=$?
"$BIN/sft_run" "${sft[@]}" --max-steps 2 --data "$T/qa_sheet.jsonl" --out "$T/f.ckpt" --metrics "$T/f.jsonl" 2>/dev/null
check "sft_run --sheet qa trains like its JSONL ($(tail -1 "$T/e.err"))" "[ $rc -eq 0 ] && [ -s $T/e.jsonl ] && [ \"\$(losses $T/e.jsonl)\" = \"\$(losses $T/f.jsonl)\" ]"

"$BIN/rm_train" --model "$MODEL" --data "$TAB/prefs.tsv" --lr 1e-3 --batch-size 2 --max-length 64 --max-steps 2 --out "$T/g.ckpt" 2>"$T/g.err"; rc=$?
check "rm_train --data prefs.tsv exits 0 ($(tail -1 "$T/g.err"))" "[ $rc -eq 0 ] && grep -q 'prefs.tsv: 3 examples' $T/g.err"

"$BIN/generate" --model "$MODEL" --prompts "$TAB/qa.csv" --max-new-tokens 2 > "$T/gen.jsonl" 2>"$T/gen.err"; rc=$?
check "generate --prompts qa.csv: one completion per row ($(tail -1 "$T/gen.err"))" "[ $rc -eq 0 ] && [ \$(wc -l < $T/gen.jsonl) -eq 4 ] && grep -q 'Say \\\\\"hi' $T/gen.jsonl"

# the other programs that read records take the same files (issue 18's
# hostile pass: rm_score read lines itself, so a CSV was "not valid JSON";
# logprobs guessed SFT for a preference workbook; generate had no --sheet)
"$BIN/rm_score" --model "$T/g.ckpt" --data "$TAB/prefs.tsv" > "$T/rs.jsonl" 2>"$T/rs.err"; rc=$?
check "rm_score --data prefs.tsv scores 3 pairs ($(tail -1 "$T/rs.err"))" \
    "[ $rc -eq 0 ] && [ \$(grep -c chosen_score $T/rs.jsonl) -eq 3 ]"
"$BIN/rm_score" --model "$T/g.ckpt" --data "$TAB/prefs.xlsx" --sheet qa > "$T/rs2.jsonl" 2>"$T/rs2.err"; rc=$?
check "rm_score --data prefs.xlsx --sheet qa scores 3 records ($(tail -1 "$T/rs2.err"))" \
    "[ $rc -eq 0 ] && [ \$(grep -c '\"score\"' $T/rs2.jsonl) -eq 3 ]"
"$BIN/logprobs" --model "$MODEL" --data "$TAB/prefs.xlsx" > "$T/lp.jsonl" 2>"$T/lp.err"; rc=$?
check "logprobs --data prefs.xlsx reads pairs ($(tail -1 "$T/lp.err"))" \
    "[ $rc -eq 0 ] && [ \$(grep -c chosen_logp $T/lp.jsonl) -eq 3 ]"
"$BIN/logprobs" --model "$MODEL" --data "$TAB/prefs.xlsx" --sheet qa > "$T/lp2.jsonl" 2>"$T/lp2.err"; rc=$?
check "logprobs --sheet qa reads SFT rows ($(tail -1 "$T/lp2.err"))" "[ $rc -eq 0 ] && [ \$(wc -l < $T/lp2.jsonl) -eq 3 ]"
"$BIN/generate" --model "$MODEL" --prompts "$TAB/prefs.xlsx" --sheet qa --max-new-tokens 1 > "$T/gq.jsonl" 2>"$T/gq.err"; rc=$?
check "generate --prompts prefs.xlsx --sheet qa ($(tail -1 "$T/gq.err"))" \
    "[ $rc -eq 0 ] && [ \$(wc -l < $T/gq.jsonl) -eq 3 ] && grep -q 'What is 6\\*7' $T/gq.jsonl"
# ppo_run accepted --sheet and read the first sheet anyway
timeout 60 "$BIN/ppo_run" --policy "$MODEL" --prompts "$TAB/prefs.xlsx" --sheet nope --reward math --advantage grpo \
    --n 2 --max-steps 1 --out "$T/p.ckpt" >/dev/null 2>"$T/pp.err"; rc=$?
check "ppo_run --prompts x.xlsx --sheet names the sheet it reads ($(tail -1 "$T/pp.err"))" \
    "[ $rc -eq 1 ] && grep -q 'no sheet named \"nope\"' $T/pp.err"
# records from a pipe (the peek for '[' ate a JSONL file's first '{') and
# a directory given as --data
printf '{"question": "q", "answer": "a"}\n{"question": "q2", "answer": "a2"}\n' |
    "$BIN/sft_run" "${sft[@]}" --max-steps 1 --data /dev/stdin --out "$T/pipe.ckpt" 2>"$T/pipe.err"; rc=$?
check "sft_run --data /dev/stdin reads a pipe ($(tail -1 "$T/pipe.err"))" "[ $rc -eq 0 ] && grep -q '/dev/stdin: 2 examples' $T/pipe.err"
printf '{"prompt": "q"}\n{"prompt": "r"}\n' | "$BIN/generate" --model "$MODEL" --prompts /dev/stdin --max-new-tokens 1 \
    > "$T/pipe.jsonl" 2>"$T/pipe2.err"; rc=$?
check "generate --prompts /dev/stdin ($(tail -1 "$T/pipe2.err"))" "[ $rc -eq 0 ] && [ \$(wc -l < $T/pipe.jsonl) -eq 2 ]"
mkdir "$T/ds_dir"
"$BIN/sft_run" "${sft[@]}" --data "$T/ds_dir" --out "$T/dir.ckpt" 2>"$T/dir.err"; rc=$?
check "a directory as --data is named ($(tail -1 "$T/dir.err"))" "[ $rc -eq 1 ] && grep -q 'ds_dir is a directory: the data is one file' $T/dir.err"

printf 'question,answer\nsay hi,hi there\nname a color,\n' > "$T/bad.csv"
"$BIN/sft_run" "${sft[@]}" --data "$T/bad.csv" --out "$T/h.ckpt" 2>"$T/h.err"; rc=$?
check "an empty cell is named ($(cat "$T/h.err"))" "[ $rc -eq 1 ] && grep -q 'bad.csv:3: column \"answer\" is empty' $T/h.err"
"$BIN/dpo_run" "${dpo[@]}" --data "$TAB/prefs.xlsx" --sheet train --out "$T/i.ckpt" 2>"$T/i.err"; rc=$?
check "a missing sheet lists the sheets ($(cat "$T/i.err"))" "[ $rc -eq 1 ] && grep -q 'no sheet named \"train\" (the workbook has \"prefs\", \"qa\")' $T/i.err"

finish
