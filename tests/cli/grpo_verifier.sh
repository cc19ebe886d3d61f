#!/usr/bin/env bash
# RL with verifiable rewards, end to end on a tiny model (dim 32, byte
# tokenizer, as ppo_run.sh builds it):
#  - GRPO with rule-based terms only (--reward exact,format:0.1): no reward
#    model, no reward_server; labels from {prompt, answer} and GSM8K-style
#    {question, answer: "... #### aa"} records; the metrics users watch
#    (each term's mean, completion lengths, clip fractions, zero-spread
#    groups, entropy, the rollout/policy log-prob gap) are present and
#    finite, and the gap is below 1e-5; the format reward rises;
#  - --eval-data: pass@1, pass@N and mean@N on held-out prompts, before
#    training and at each --eval-every;
#  - --batch-invariant (full and LoRA, with and without --tis-cap): the
#    gap is exactly 0 in every iteration;
#  - the DAPO / Dr. GRPO / GSPO / CISPO / TIS flags run; DAPO's dynamic
#    sampling trains on groups with reward spread only;
#  - --kl-coef 0 (beta 0) starts no reference process and logs a KL of 0;
#  - a remote reward function (a python3 stdlib HTTP server on 127.0.0.1)
#    through --reward-url: its rewards, scores and extra_logs arrive; a
#    server that answers 500, one that answers too few rewards and one that
#    never answers each stop the run with one sentence naming the URL;
#    align's own reward_server --http as that URL: its scores and
#    extra_logs reach the metrics;
#  - bad reward specs are refused before anything starts.
set -u
BIN=$1
T=$(mktemp -d); [ -n "${KEEP:-}" ] && echo "keeping $T"
SRV=
trap '[ -n "$SRV" ] && kill $SRV 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/ppo.sh"

ppo_data "$T" 128 0
python3 - "$T" <<'PY'
import json, sys
with open(sys.argv[1] + "/labelled.jsonl", "w") as f:
    for i in range(16):
        if i % 4:
            f.write(json.dumps({"prompt": "Write %d:" % i, "answer": "a" * (i % 3 + 1)}) + "\n")
        else:
            f.write(json.dumps({"question": "Write %d:" % i, "answer": "Two of them.\n#### aa"}) + "\n")
PY
"$BIN/model_init" --dim 32 --layers 2 --heads 2 --tokenizer byte --out "$T/init.ckpt" 2>/dev/null
"$BIN/sft_run" --model "$T/init.ckpt" --data "$T/sft.jsonl" --out "$T/sft.ckpt" --lr 1e-2 --batch-size 16 --max-steps 40 2>/dev/null
check "tiny SFT model" "[ -s $T/sft.ckpt ]"

common=(--policy "$T/sft.ckpt" --prompts "$T/labelled.jsonl" --advantage grpo --n 4 --batch-size 4
        --max-new-tokens 6 --lr 3e-3 --seed 3)

# ---- 1. rule-based terms only
timeout 60 "$BIN/ppo_run" "${common[@]}" --reward exact,format:0.1 --format-pattern '^a' --max-steps 12 \
    --out "$T/g.ckpt" --metrics "$T/g.jsonl" 2>"$T/g.err"
check "GRPO with exact,format:0.1 exits 0" "[ $? -eq 0 ]"
check "no reward_server started" "! grep -q 'started reward' $T/g.err && [ \$(grep -c started $T/g.err) -eq 3 ]"
check "the metrics users watch, all finite; log-prob gap below 1e-5" "python3 - $T/g.jsonl <<'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
need = ['rewards/exact/mean', 'rewards/format/mean', 'completions/mean_length', 'completions/min_length',
        'completions/max_length', 'completions/clipped_ratio', 'frac_reward_zero_std', 'clip_ratio/low_mean',
        'clip_ratio/high_mean', 'clip_ratio/region_mean', 'entropy', 'rollout/logp_diff_max',
        'rollout/logp_diff_mean', 'objective/scores']
ok = len(rows) == 12 and all(k in r for r in rows for k in need)
ok = ok and all(math.isfinite(v) for r in rows for v in r.values() if isinstance(v, (int, float)))
# the score is the weighted sum of the terms
ok = ok and all(abs(r['objective/scores'] - r['rewards/exact/mean'] - 0.1 * r['rewards/format/mean']) < 1e-5 for r in rows)
gap = max(r['rollout/logp_diff_max'] for r in rows)
print('rollout/logp_diff_max', gap)
sys.exit(0 if ok and gap < 1e-5 else 1)
PY"
check "the format reward rises" "python3 - $T/g.jsonl <<'PY'
import json, sys
f = [json.loads(l)['rewards/format/mean'] for l in open(sys.argv[1])]
print('rewards/format/mean', ' '.join('%.2f' % x for x in f))
sys.exit(0 if sum(f[-3:]) / 3 > sum(f[:3]) / 3 + 0.2 else 1)
PY"

# ---- 1a. beta 0 (no KL in the reward nor the loss, TRL's GRPO default): no
# reference process is started and objective/kl is exactly 0
timeout 60 "$BIN/ppo_run" "${common[@]}" --reward exact --kl-coef 0 --max-steps 2 \
    --out "$T/k0.ckpt" --metrics "$T/k0.jsonl" 2>"$T/k0.err"
check "--kl-coef 0 exits 0" "[ $? -eq 0 ]"
check "--kl-coef 0 starts no reference process (policy and rollout only)" \
    "! grep -q 'started reference' $T/k0.err && [ \$(grep -c started $T/k0.err) -eq 2 ]"
check "--kl-coef 0 logs objective/kl exactly 0" "python3 - $T/k0.jsonl <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
sys.exit(0 if len(rows) == 2 and all(r['objective/kl'] == 0 for r in rows) else 1)
PY"

# ---- 1b. held-out evaluation by the verifier: before training and at each eval
head -8 "$T/labelled.jsonl" >"$T/heldout.jsonl"
timeout 60 "$BIN/ppo_run" "${common[@]}" --reward exact,format:0.1 --format-pattern '^a' --max-steps 4 \
    --eval-data "$T/heldout.jsonl" --eval-every 2 --out "$T/v.ckpt" --metrics "$T/v.jsonl" 2>"$T/v.err"
check "--eval-data run exits 0" "[ $? -eq 0 ]"
check "eval lines at steps 0, 2, 4 with mean@4, pass@1, pass@4 in [0, 1]" "python3 - $T/v.jsonl <<'PY'
import json, sys
ev = [r for r in map(json.loads, open(sys.argv[1])) if 'eval_pass@1' in r]
ok = [r['step'] for r in ev] == [0, 2, 4]
ok = ok and all(0 <= r[k] <= 1.1 for r in ev for k in ('eval_mean@4', 'eval_pass@1', 'eval_pass@4'))
ok = ok and all(r['eval_pass@1'] <= r['eval_pass@4'] for r in ev)
sys.exit(0 if ok else 1)
PY"

# ---- 2. the loss family's flags
for flags in "--cliprange-high 0.28 --overlong-buffer 2 --reward exact,format:0.1,overlong:0.5" \
             "--scale-rewards none --loss-agg seq-mean-token-sum-norm --reward exact,format:0.1" \
             "--policy-loss gspo --cliprange 0.003 --cliprange-high 0.004 --reward exact,format:0.1" \
             "--policy-loss cispo --cliprange-high 4 --reward math,format:0.1,length:-0.1" \
             "--tis-cap 2 --minibatch-size 8 --reward exact,format:0.1"; do
    timeout 60 "$BIN/ppo_run" "${common[@]}" $flags --format-pattern '^a' --max-steps 2 --out "$T/f.ckpt" \
        --metrics "$T/f.jsonl" 2>"$T/f.err"
    check "ppo_run $flags" "[ $? -eq 0 ] && [ \$(wc -l <$T/f.jsonl) -eq 2 ]"
    rm -f "$T/f.jsonl"
done

# ---- 2a. --batch-invariant: the rollout's log-probs are the policy's to the bit, every iteration
# (full fine-tuning with the first minibatch compared; LoRA with --tis-cap, every token compared)
for flags in "--minibatch-size 16" "--tis-cap 2 --minibatch-size 8 --lora-rank 4 --lora-dropout 0"; do
    timeout 60 "$BIN/ppo_run" "${common[@]}" $flags --batch-invariant --reward exact,format:0.1 --format-pattern '^a' \
        --max-steps 3 --out "$T/bi.ckpt" --metrics "$T/bi.jsonl" 2>"$T/bi.err"
    check "ppo_run --batch-invariant $flags: rollout/logp_diff_max is 0" "[ $? -eq 0 ] && python3 - $T/bi.jsonl <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print('rollout/logp_diff_max', [r['rollout/logp_diff_max'] for r in rows])
sys.exit(0 if len(rows) == 3 and all(r['rollout/logp_diff_max'] == 0 and r['rollout/logp_diff_mean'] == 0 for r in rows) else 1)
PY"
    rm -f "$T/bi.jsonl"
done

# ---- 2b. DAPO's dynamic sampling: groups without reward spread are dropped and refilled
timeout 60 "$BIN/ppo_run" "${common[@]}" --reward exact,format:0.1 --format-pattern '^a' --dynamic-sampling \
    --max-gen-batches 3 --max-steps 4 --out "$T/d.ckpt" --metrics "$T/d.jsonl" 2>"$T/d.err"
check "--dynamic-sampling exits 0" "[ $? -eq 0 ]"
check "the trained groups all have reward spread (unless every round came up empty)" "python3 - $T/d.jsonl <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print('dynamic_sampling rounds', [r['dynamic_sampling/rounds'] for r in rows], 'groups',
      [r['dynamic_sampling/groups'] for r in rows])
ok = len(rows) == 4 and all(1 <= r['dynamic_sampling/rounds'] <= 3 for r in rows)
ok = ok and all(r['frac_reward_zero_std'] == 0 or r['dynamic_sampling/kept_fraction'] == 0 for r in rows)
ok = ok and all(r['dynamic_sampling/groups'] == 4 or r['dynamic_sampling/rounds'] == 3 for r in rows)
sys.exit(0 if ok else 1)
PY"
bad_ds() { timeout 20 "$BIN/ppo_run" --policy "$T/sft.ckpt" --prompts "$T/labelled.jsonl" --reward exact --dynamic-sampling \
    --out "$T/x.ckpt" 2>&1 | grep -q "dynamic-sampling needs groups"; }
check "--dynamic-sampling without groups refused" "bad_ds"

# ---- 3. a remote reward function (OpenRLHF's protocol)
cat >"$T/server.py" <<'PY'
import json, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
mode = sys.argv[1]
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        q, p, labels = req['query'], req['prompts'], req['labels']
        if mode == 'hang':
            time.sleep(30)
        if mode == 'error':
            self.send_response(500); self.end_headers(); self.wfile.write(b'boom'); return
        comp = [qq[len(pp):] for qq, pp in zip(q, p)]
        rewards = [c.count('a') / 6 for c in comp]
        if mode == 'short':
            rewards = rewards[:-1]
        body = json.dumps({'rewards': rewards, 'scores': [1.0] * len(q),
                           'extra_logs': {'labelled': [float(l is not None) for l in labels]}}).encode()
        self.send_response(200); self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
s = HTTPServer(('127.0.0.1', 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
serve() { # serve MODE: starts the server, sets SRV and PORT
    [ -n "$SRV" ] && kill $SRV 2>/dev/null && wait $SRV 2>/dev/null
    rm -f "$T/port"
    python3 "$T/server.py" "$1" >"$T/port" & SRV=$!
    for _ in $(seq 600); do [ -s "$T/port" ] && break; sleep 0.05; done # 30 s: python3 starts slowly on a busy machine
    PORT=$(head -1 "$T/port")
}
serve good
timeout 60 "$BIN/ppo_run" "${common[@]}" --reward-url "http://127.0.0.1:$PORT/get_reward" --reward format:0.5,url \
    --format-pattern '^a' --max-steps 3 --out "$T/u.ckpt" --metrics "$T/u.jsonl" 2>"$T/u.err"
check "--reward-url run exits 0" "[ $? -eq 0 ]"
check "the url term, its scores and extra_logs are logged" "python3 - $T/u.jsonl <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ok = len(rows) == 3 and all(r['rewards/url/scores_mean'] == 1.0 and r['rewards/url/labelled'] == 1.0 for r in rows)
ok = ok and all(abs(r['objective/scores'] - r['rewards/url/mean'] - 0.5 * r['rewards/format/mean']) < 1e-5 for r in rows)
ok = ok and any(r['rewards/url/mean'] > 0 for r in rows)
sys.exit(0 if ok else 1)
PY"
for mode in error short hang; do
    serve $mode
    timeout 60 "$BIN/ppo_run" "${common[@]}" --reward-url "http://127.0.0.1:$PORT/get_reward" --reward-timeout 1 \
        --reward-retries 1 --max-steps 2 --out "$T/e.ckpt" 2>"$T/e-$mode.err"
    rc=$?
    check "a server that misbehaves ($mode): one clear error" \
        "[ $rc -eq 1 ] && grep -q 'reward-url http://127.0.0.1:$PORT/get_reward: no usable reply after 2 tries' $T/e-$mode.err"
    check "no ppo_run left behind ($mode)" "! pgrep -f \"$T/e.ckpt\" >/dev/null"
done
grep -h "no usable reply" "$T"/e-*.err
kill $SRV 2>/dev/null; wait $SRV 2>/dev/null; SRV=

# ---- 3b. align's own reward_server --http as the --reward-url: its scores
# and extra_logs (raw_score) arrive as OpenRLHF's server sends them
mkdir -p "$T/rmd" && ppo_data "$T/rmd" 0 32
"$BIN/rm_train" "$T/rmd/prefs.jsonl" --model "$T/init.ckpt" --out "$T/rm.ckpt" --batch-size 16 --max-steps 2 2>/dev/null
"$BIN/reward_server" --model "$T/rm.ckpt" --bind "ipc://$T/rm.sock" --http 0 2>"$T/rs.err" & SRV=$!
for _ in $(seq 600); do grep -q get_reward "$T/rs.err" && break; sleep 0.05; done
URL=$(grep -o 'http://127.0.0.1:[0-9]*/get_reward' "$T/rs.err" | head -1)
timeout 60 "$BIN/ppo_run" "${common[@]}" --reward-url "$URL" --reward url --max-steps 2 --out "$T/r.ckpt" \
    --metrics "$T/r.jsonl" 2>"$T/r.err"
check "--reward-url at reward_server --http exits 0" "[ $? -eq 0 ]"
check "reward_server's rewards, scores and raw_score reach the metrics" "python3 - $T/r.jsonl <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
# no --normalize: rewards, scores and raw_score are the same numbers
ok = len(rows) == 2 and all(abs(r['rewards/url/scores_mean'] - r['rewards/url/mean']) < 1e-5 and
                            abs(r['rewards/url/raw_score'] - r['rewards/url/mean']) < 1e-5 for r in rows)
sys.exit(0 if ok else 1)
PY"
kill $SRV 2>/dev/null; wait $SRV 2>/dev/null; SRV=

# ---- 4. bad reward specs
bad() { # bad "WHAT" "EXPECTED" ARGS...
    local what=$1 want=$2; shift 2
    timeout 20 "$BIN/ppo_run" "${common[@]}" "$@" --out "$T/x.ckpt" 2>"$T/x.err"
    local rc=$?
    check "$what" "[ $rc -ne 0 ] && grep -q -- \"$want\" $T/x.err"
}
bad "format without a pattern" "give the pattern" --reward format
bad "a bad format pattern" "does not compile" --reward format --format-pattern '(unclosed'
bad "a repeated term" "appears twice" --reward math,math:2
bad "url term without --reward-url" "give --reward-url" --reward url
bad "https refused" "https is not supported" --reward-url https://example.com/r
bad "labels missing for math" "no record has an" --reward math --prompts "$T/prompts.jsonl"

finish
