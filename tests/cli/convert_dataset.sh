#!/usr/bin/env bash
# scripts/convert_dataset.py on local Parquet and Arrow files, as a new user
# brings them: the rows come out as JSONL that sft_run reads; a mistyped
# --rename or --columns, a Parquet file cut off in a download, or an Arrow
# file cut off is one sentence (no traceback) and leaves no output file.
# Needs pyarrow (PyPI; Debian 12 has none): the python of
# ALIGN_PYARROW_PYTHON, a .venv*/ at the repository root, or python3,
# whichever imports it; without one the test is skipped (77).
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$HERE/../..
SCRIPT=$ROOT/scripts/convert_dataset.py
MODEL=$HERE/../fixtures/hf_tiny_qwen2
py=
for cand in ${ALIGN_PYARROW_PYTHON:-} "$ROOT"/.venv*/bin/python python3; do
    if [ -x "$(command -v "$cand" 2>/dev/null)" ] && "$cand" -c "import pyarrow.parquet" 2>/dev/null; then py=$cand; break; fi
done
if [ -z "$py" ]; then echo "skipped: no python with pyarrow (set ALIGN_PYARROW_PYTHON)"; exit 77; fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"
cd "$T" || exit 1
"$py" - <<'PY'
import pyarrow as pa, pyarrow.parquet as pq
t = pa.table({"instruction": ["Say hi.", "Count to three."], "output": ["Hi there!", "one two three"]})
pq.write_table(t, "qa.parquet")
with pa.OSFile("qa.arrow", "wb") as f:
    w = pa.ipc.new_stream(f, t.schema)
    w.write_table(t)
    w.close()
open("cut.parquet", "wb").write(open("qa.parquet", "rb").read()[:100])
open("cut.arrow", "wb").write(open("qa.arrow", "rb").read()[:50])
PY

"$py" "$SCRIPT" qa.parquet qa.jsonl --rename instruction=question,output=answer 2>a.err; rc=$?
check "qa.parquet -> qa.jsonl ($(tail -1 a.err))" \
    "[ $rc -eq 0 ] && [ \"\$(head -1 qa.jsonl)\" = '{\"question\": \"Say hi.\", \"answer\": \"Hi there!\"}' ] && [ \$(wc -l < qa.jsonl) -eq 2 ]"
OMP_NUM_THREADS=1 "$BIN/sft_run" --model "$MODEL" --data qa.jsonl --out a.ckpt --max-steps 1 --max-length 32 2>b.err; rc=$?
check "sft_run trains on it ($(tail -1 b.err))" "[ $rc -eq 0 ] && grep -q 'qa.jsonl: 2 examples' b.err"
"$py" "$SCRIPT" qa.arrow qa2.jsonl 2>c.err; rc=$?
check "an Arrow stream converts ($(tail -1 c.err))" "[ $rc -eq 0 ] && [ \$(wc -l < qa2.jsonl) -eq 2 ]"

"$py" "$SCRIPT" qa.parquet r.jsonl --rename instructions=question 2>d.err; rc=$?
check "a mistyped --rename is named ($(tail -1 d.err))" \
    "[ $rc -eq 1 ] && [ ! -e r.jsonl ] && grep -qx 'convert_dataset: --rename: no column instructions (the columns: instruction, output)' d.err"
"$py" "$SCRIPT" qa.parquet c.jsonl --columns question 2>e.err; rc=$?
check "a missing --columns column leaves no file ($(tail -1 e.err))" "[ $rc -eq 1 ] && [ ! -e c.jsonl ] && [ ! -e c.jsonl.tmp ]"
"$py" "$SCRIPT" cut.parquet x.jsonl 2>f.err; rc=$?
check "a cut-off Parquet file is one sentence ($(tail -1 f.err))" \
    "[ $rc -eq 1 ] && [ \$(wc -l < f.err) -eq 1 ] && grep -q '^convert_dataset: cut.parquet: cannot be read as Parquet (' f.err && [ ! -e x.jsonl ]"
"$py" "$SCRIPT" cut.arrow y.jsonl 2>g.err; rc=$?
check "a cut-off Arrow file is one sentence ($(tail -1 g.err))" \
    "[ $rc -eq 1 ] && [ \$(wc -l < g.err) -eq 1 ] && grep -q '^convert_dataset: cut.arrow: cannot be read as Arrow (' g.err && [ ! -e y.jsonl ]"
finish
