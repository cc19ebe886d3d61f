#!/usr/bin/env bash
# The report page in a real browser, on two real DPO runs of the tiny Qwen2
# fixture and greedy samples before and after one of them:
#  - dpo_run --metrics writes <out>-report.html by itself;
#  - align_report RUN_DIR RUN_DIR writes one page that loads nothing from
#    anywhere (no src, href, @import or url());
#  - headless Chromium renders it (--dump-dom): one drawn series per run and
#    metric with as many points as the JSONL has values, the eval rows, and
#    every completion under its sample set's column, as generate wrote it;
#  - a screenshot is kept in the build directory: build/artifacts/report.png.
# Without Chromium (Debian's `chromium`) the test exits 77 (skipped) after
# the checks that need no browser.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../fixtures/hf_tiny_qwen2
ART=$(cd "$BIN/.." && pwd)/artifacts
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

mkdir -p "$T/run_a" "$T/run_b"
python3 - "$T" <<'PY'
import json, sys
qa = [("what is two plus two", "four", "five"), ("name a color", "blue", "dog"), ("say hi", "hi there", "go away"),
      ("capital of france?", "paris", "rome <b>&amp;</b>")]
with open(sys.argv[1] + "/prefs.jsonl", "w") as f:
    for i in range(24):
        q, c, r = qa[i % 4]
        f.write(json.dumps({"prompt": q, "chosen": c, "rejected": r}) + "\n")
with open(sys.argv[1] + "/prompts.jsonl", "w") as f:
    for q, _, _ in qa:
        f.write(json.dumps({"prompt": q}) + "\n")
PY
common=(--policy "$MODEL" --data "$T/prefs.jsonl" --eval-data "$T/prefs.jsonl" --eval-every 3 --batch-size 4 --max-steps 6)
gen=(--prompts "$T/prompts.jsonl" --temperature 0 --max-new-tokens 10)
"$BIN/generate" --model "$MODEL" "${gen[@]}" --out "$T/run_a/samples_before.jsonl" 2>"$T/g0.err"
check "generate before exits 0" "[ $? -eq 0 ]"
"$BIN/dpo_run" "${common[@]}" --lr 1e-2 --out "$T/run_a/dpo.ckpt" --metrics "$T/run_a/metrics.jsonl" 2>"$T/a.err"
check "dpo_run a exits 0" "[ $? -eq 0 ]"
check "the run wrote its own report: $(tail -1 "$T/a.err")" "[ -s $T/run_a/dpo-report.html ] && grep -q 'wrote $T/run_a/dpo-report.html' $T/a.err"
"$BIN/dpo_run" "${common[@]}" --lr 3e-3 --loss ipo --out "$T/run_b/dpo.ckpt" --metrics "$T/run_b/metrics.jsonl" 2>"$T/b.err"
check "dpo_run b exits 0" "[ $? -eq 0 ]"
"$BIN/generate" --model "$T/run_a/dpo.ckpt" "${gen[@]}" --out "$T/run_a/samples_after.jsonl" 2>"$T/g1.err"
check "generate after exits 0" "[ $? -eq 0 ]"
"$BIN/align_report" "$T/run_a" "$T/run_b" --out "$T/report.html" 2>"$T/r.err"
rc=$?
check "align_report exits 0: $(cat "$T/r.err")" "[ $rc -eq 0 ] && [ -s $T/report.html ]"
check "the page loads nothing from anywhere" "! grep -Eiq '(src|href)[[:space:]]*=|@import|url\\(' $T/report.html"
"$BIN/align_report" "$T/prefs.jsonl" --out "$T/x.html" 2>"$T/x.err"
rc=$?
check "a file of neither kind is named: $(cat "$T/x.err")" "[ $rc -ne 0 ] && grep -q 'prefs.jsonl' $T/x.err && [ ! -e $T/x.html ]"

browser=""
for b in chromium chromium-browser google-chrome; do command -v "$b" >/dev/null 2>&1 && { browser=$b; break; }; done
if [ -z "$browser" ]; then
    echo "$pass passed, $fail failed (without a browser)"
    [ "$fail" -eq 0 ] || exit 1
    echo "skipped: no Chromium (apt-get install chromium) to render the page"
    exit 77
fi
# --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --user-data-dir="$T/profile")
timeout 120 "$browser" "${flags[@]}" --dump-dom "file://$T/report.html" >"$T/dom.html" 2>"$T/chromium.err"
check "chromium renders the page" "[ $? -eq 0 ] && grep -q 'data-rendered=\"1\"' $T/dom.html"
python3 - "$T" <<'PY'
import glob, html.parser, json, os, sys
T = sys.argv[1]

class Dom(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.series, self.cells, self.evals = [], [], []
        self.cell = None  # (set, [text]) while inside a completion cell's <pre>
        self.in_pre = False
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "path" and "series" in a.get("class", "").split():
            self.series.append((a["data-run"], a["data-metric"], int(a["data-points"])))
        if tag == "td" and a.get("class") == "completion":
            self.cell = [a["data-set"], ""]
            self.cells.append(self.cell)
        if tag == "tr" and "data-run" in a:
            self.evals.append(a["data-run"])
        if tag == "pre":
            self.in_pre = True
    def handle_endtag(self, tag):
        if tag == "pre":
            self.in_pre = False
        if tag == "td":
            self.cell = None
    def handle_data(self, d):
        if self.cell is not None and self.in_pre:
            self.cell[1] += d

dom = Dom()
dom.feed(open(T + "/dom.html", encoding="utf-8").read())
bad = 0
def check(ok, what):
    global bad
    if not ok:
        bad += 1
        print("FAIL:", what)

drawn = {(r, m): n for r, m, n in dom.series}
for run in ("run_a", "run_b"):
    name = run + "/metrics"
    counts, evals = {}, 0
    for line in open(f"{T}/{run}/metrics.jsonl"):
        row = json.loads(line)
        evals += any(k.startswith("eval_") for k in row)
        for k, v in row.items():
            if k not in ("step", "epoch") and isinstance(v, (int, float)):
                counts[k] = counts.get(k, 0) + 1
    check(len(counts) > 10, f"{name}: {len(counts)} metrics in the JSONL")
    for k, n in counts.items():
        check(drawn.get((name, k)) == n, f"{name} {k}: {n} values in the JSONL, drawn {drawn.get((name, k))}")
    check(dom.evals.count(name) == evals, f"{name}: {evals} eval rows, {dom.evals.count(name)} in the table")
check(len(dom.series) == len(drawn), "one series per run and metric")

for label in ("samples_before", "samples_after"):
    want = [json.loads(l)["completion"] for l in open(f"{T}/run_a/{label}.jsonl")]
    got = [text for s, text in dom.cells if s == label]
    check(got == want, f"{label}: completions in the page {got!r} vs generate's {want!r}")
check(len(dom.cells) == 8, f"4 prompts x 2 sets of completions: {len(dom.cells)} cells")
print(f"DOM: {len(dom.series)} series, {len(dom.evals)} eval rows, {len(dom.cells)} completion cells")
sys.exit(1 if bad else 0)
PY
check "the rendered DOM holds every series, eval row and sample" "[ $? -eq 0 ]"
mkdir -p "$ART"
rm -f "$ART/report.png"
timeout 120 "$browser" "${flags[@]}" --window-size=1400,2600 --screenshot="$ART/report.png" "file://$T/report.html" >/dev/null 2>&1
check "screenshot kept in $ART/report.png" "[ \$(stat -c %s $ART/report.png 2>/dev/null || echo 0) -gt 20000 ]"
cp "$T/report.html" "$ART/report.html" 2>/dev/null
finish
