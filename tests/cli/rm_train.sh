#!/usr/bin/env bash
# rm_train, reward_server and rm_score end to end on the tiny Qwen2 fixture:
#  - on a learnable preference set (chosen praises, rejected complains;
#    explicit and implicit hh-style prompts, some margins) accuracy rises;
#  - the checkpoint is a reward model (score.weight, no lm_head) and holds
#    reward_mean / reward_std in its train_state;
#  - --resume from a periodic checkpoint gives bit-identical final weights
#    and the same per-step metrics as the unbroken run;
#  - rm_score in process and through reward_server (--connect) print the
#    same records with the same scores (1e-5 relative), and HTTP
#    /get_reward answers OpenRLHF's shape (rewards, raw scores, extra_logs),
#    also under --normalize, which still normalises the ZeroMQ path;
#  - bad usage gets one clear error: numeric flags out of range are refused
#    at parse time, an empty or directory --data is an error.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../fixtures/hf_tiny_qwen2
T=$(mktemp -d)
SP=
trap '[ -n "$SP" ] && kill $SP 2>/dev/null; rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

python3 - "$T/prefs.jsonl" <<'PY'
import json, random, sys
random.seed(0)
prompts = ["how was the movie", "rate the food", "what about the weather", "tell me about the book",
           "how is the hotel", "describe the trip", "what do you think of it", "was the game fun"]
good = ["it was great and wonderful", "really good, loved it", "excellent, very nice", "great, happy with it"]
bad = ["it was awful and terrible", "really bad, hated it", "horrible, very poor", "bad, unhappy with it"]
with open(sys.argv[1], "w") as f:
    for i in range(32):
        p = prompts[i % len(prompts)]
        rec = {"prompt": p, "chosen": random.choice(good), "rejected": random.choice(bad)}
        if i % 3 == 0:
            rec = {"chosen": "\n\nHuman: " + p + "\n\nAssistant: " + rec["chosen"],
                   "rejected": "\n\nHuman: " + p + "\n\nAssistant: " + rec["rejected"]}
        if i % 5 == 0:
            rec["margin"] = 0.5
        f.write(json.dumps(rec) + "\n")
PY
common=(--model "$MODEL" --lr 1e-2 --batch-size 8 --max-length 64 --max-steps 12)

"$BIN/rm_train" "$T/prefs.jsonl" "${common[@]}" --save-every 8 --out "$T/a.ckpt" --metrics "$T/a.jsonl" 2>"$T/a.err"
check "rm_train exits 0" "[ $? -eq 0 ]"
acc() { python3 -c "import json,sys; r=[json.loads(l) for l in open('$1')]; print(sum(x['accuracy'] for x in r[$2])/len(r[$2]))"; }
a0=$(acc "$T/a.jsonl" ":3"); a1=$(acc "$T/a.jsonl" "-3:")
check "accuracy rises ($a0 -> $a1)" "python3 -c 'import sys; sys.exit(0 if $a1 >= 0.9 and $a1 > $a0 else 1)'"
check "metrics carry TRL's names" "head -1 $T/a.jsonl | grep -q '\"rewards/chosen\"' && head -1 $T/a.jsonl | grep -q '\"margin\"'"
check "reward model shape and stats" "python3 - $T/a.ckpt <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
st = json.loads(h['__metadata__']['train_state'])
ok = 'score.weight' in h and h['score.weight']['shape'] == [1, 32] and 'lm_head.weight' not in h
ok = ok and 'reward_mean' in st and st['reward_std'] > 0 and st['reward_count'] == 64
sys.exit(0 if ok else 1)
PY"

"$BIN/rm_train" --data "$T/prefs.jsonl" "${common[@]}" --out "$T/b.ckpt" --metrics "$T/b.jsonl" --resume "$T/a-step8.ckpt" 2>"$T/b.err"
check "resume exits 0" "[ $? -eq 0 ]"
check "resumed metrics equal the unbroken run's" "diff <(tail -4 $T/a.jsonl | cut -d, -f1-5) <(cut -d, -f1-5 $T/b.jsonl)"
check "resumed weights bit-identical" "python3 - $T/a.ckpt $T/b.ckpt <<'PY'
import struct, sys
def data(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; return b[8 + n:]
sys.exit(0 if data(sys.argv[1]) == data(sys.argv[2]) else 1)
PY"

# scoring: in process vs remote
head -6 "$T/prefs.jsonl" > "$T/score.jsonl"
echo '{"prompt": "how was it", "completion": "great"}' >> "$T/score.jsonl"
echo '{"text": "plain text"}' >> "$T/score.jsonl"
# --max-length 64 as in training: the fixture has 64 positions, and the
# server refuses longer sequences (too_long) instead of scoring them
"$BIN/rm_score" --model "$T/a.ckpt" --data "$T/score.jsonl" --out "$T/local.jsonl" --max-length 64 2>"$T/s1.err"
check "rm_score in process exits 0" "[ $? -eq 0 ]"
check "preference records get chosen/rejected scores" "grep -c chosen_score $T/local.jsonl | grep -qx 6 && grep -c '\"score\"' $T/local.jsonl | grep -qx 2"
"$BIN/rm_score" --model "$T/a.ckpt" --data "$T/score.jsonl" --out /dev/full 2>"$T/s0.err"; rc=$?
check "rm_score on a full disk fails naming the file ($(tail -1 $T/s0.err))" "[ $rc -ne 0 ] && grep -q -- '--out /dev/full: write failed' $T/s0.err && ! grep -q 'scored' $T/s0.err"
"$BIN/reward_server" --model "$T/a.ckpt" --bind "ipc://$T/rm.sock" --http 0 2>"$T/srv.err" &
SP=$!
"$BIN/rm_score" --connect "ipc://$T/rm.sock" --data "$T/score.jsonl" --out "$T/remote.jsonl" --max-length 64 --timeout 30 2>"$T/s2.err"
check "rm_score --connect exits 0" "[ $? -eq 0 ]"
check "remote scores equal in-process scores" "python3 - $T/local.jsonl $T/remote.jsonl <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]; b = [json.loads(l) for l in open(sys.argv[2])]
ok = len(a) == len(b) == 8
for x, y in zip(a, b):
    for k in ('score', 'chosen_score', 'rejected_score'):
        if k in x: ok = ok and abs(x[k] - y[k]) <= 1e-5 * abs(x[k]) + 1e-5
sys.exit(0 if ok else 1)
PY"
URL=$(grep -o 'http://127.0.0.1:[0-9]*/get_reward' "$T/srv.err" | head -1)
check "HTTP endpoint announced on 127.0.0.1" "[ -n '$URL' ]"
curl -s -m 20 -X POST -H 'Content-Type: application/json' --data '{"query": ["hello there", "bye"], "prompts": ["", ""]}' "$URL" >"$T/http.json"
check "POST /get_reward answers {rewards: [2 floats]}" "python3 -c 'import json; r=json.load(open(\"$T/http.json\"))[\"rewards\"]; assert len(r)==2 and all(isinstance(x,float) for x in r)'"
check "without --normalize, scores and extra_logs.raw_score equal rewards" "python3 -c 'import json; r=json.load(open(\"$T/http.json\")); assert r[\"scores\"]==r[\"rewards\"]==r[\"extra_logs\"][\"raw_score\"]'"
code=$(curl -s -m 20 -o /dev/null -w '%{http_code}' -X POST --data '{"nope": 1}' "$URL")
check "bad HTTP body gets 400" "[ '$code' = 400 ]"
kill -TERM $SP; wait $SP
check "reward_server exits 0 on SIGTERM" "[ $? -eq 0 ]"
SP=
# --normalize: rewards are (score - reward_mean) / reward_std with the
# checkpoint's statistics; scores stay the raw ones
"$BIN/reward_server" --model "$T/a.ckpt" --bind "ipc://$T/rmn.sock" --http 0 --normalize 2>"$T/srvn.err" &
SP=$!
for _ in $(seq 600); do grep -q 'get_reward' "$T/srvn.err" && break; sleep 0.05; done
URL=$(grep -o 'http://127.0.0.1:[0-9]*/get_reward' "$T/srvn.err" | head -1)
curl -s -m 20 -X POST -H 'Content-Type: application/json' --data '{"query": ["hello there", "bye"], "prompts": ["", ""]}' "$URL" >"$T/httpn.json"
check "--normalize over HTTP: scores raw, rewards normalised with the checkpoint's reward_mean/std" "python3 - $T/a.ckpt $T/http.json $T/httpn.json <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
st = json.loads(json.loads(b[8:8 + n])['__metadata__']['train_state'])
plain, norm = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
close = lambda x, y: abs(x - y) <= 1e-5 * abs(y) + 1e-5
ok = all(close(x, y) for x, y in zip(norm['scores'], plain['scores'])) and norm['extra_logs']['raw_score'] == norm['scores']
ok = ok and len(norm['rewards']) == 2 and all(close(r, (s - st['reward_mean']) / st['reward_std']) for r, s in zip(norm['rewards'], norm['scores']))
ok = ok and norm['rewards'] != norm['scores']
sys.exit(0 if ok else 1)
PY"
"$BIN/rm_score" --connect "ipc://$T/rmn.sock" --data "$T/score.jsonl" --out "$T/remoten.jsonl" --max-length 64 --timeout 30 2>"$T/s3.err"
check "--normalize over ZeroMQ: still (score - reward_mean) / reward_std" "python3 - $T/a.ckpt $T/remote.jsonl $T/remoten.jsonl <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
st = json.loads(json.loads(b[8:8 + n])['__metadata__']['train_state'])
a = [json.loads(l) for l in open(sys.argv[2])]; c = [json.loads(l) for l in open(sys.argv[3])]
ok = len(a) == len(c) == 8
for x, y in zip(a, c):
    for k in ('score', 'chosen_score', 'rejected_score'):
        if k in x:
            want = (x[k] - st['reward_mean']) / st['reward_std']
            ok = ok and abs(y[k] - want) <= 1e-5 * abs(want) + 1e-5
sys.exit(0 if ok else 1)
PY"
kill -TERM $SP; wait $SP
SP=

"$BIN/rm_train" "$T/prefs.jsonl" --model "$MODEL" 2>"$T/e1"
check "missing --out is an error" "[ $? -ne 0 ] && grep -q -- '--out' $T/e1"
"$BIN/rm_train" --model "$MODEL" --out "$T/x.ckpt" 2>"$T/e2"
check "missing data is an error" "[ $? -ne 0 ] && grep -q 'preference data' $T/e2"
"$BIN/rm_score" --data "$T/score.jsonl" 2>"$T/e3"
check "rm_score needs --model or --connect" "[ $? -ne 0 ] && grep -q -- '--connect' $T/e3"
"$BIN/reward_server" --model "$MODEL" 2>"$T/e4"
check "a model without a score head is refused" "[ $? -ne 0 ] && grep -q 'score head' $T/e4"

# numeric flags are checked when parsed (exit 2, the flag named); nothing
# listens or loads first. timeout: an unchecked value would start serving.
for bad in "--http 70000" "--http -5" "--batch-wait-ms nan" "--max-batch-tokens 0" "--drain-max-ms -1"; do
    timeout 20 "$BIN/reward_server" --model "$T/a.ckpt" --bind "ipc://$T/bad.sock" $bad 2>"$T/e5"
    rc=$?
    check "reward_server $bad is refused at parse time (exit $rc)" "[ $rc -eq 2 ] && grep -q -- '${bad%% *}' $T/e5"
done
timeout 20 "$BIN/reward_server" --model "$T/a.ckpt" --bind "ipc://$T/bad.sock" --max-length 65 2>"$T/e6"
rc=$?
check "reward_server --max-length over the model's 64 positions is refused (exit $rc)" "[ $rc -eq 1 ] && grep -q 'positions' $T/e6"
for bad in "--timeout 0" "--timeout -1" "--batch-size 0"; do
    timeout 20 "$BIN/rm_score" --connect "ipc://$T/nobody.sock" --data "$T/score.jsonl" $bad 2>"$T/e7"
    rc=$?
    check "rm_score $bad is refused at parse time (exit $rc)" "[ $rc -eq 2 ] && grep -q -- '${bad%% *}' $T/e7"
done
timeout 20 "$BIN/rm_score" --model "$T/a.ckpt" --data "$T" 2>"$T/e8"
rc=$?
check "rm_score --data DIR is an error naming it (exit $rc)" "[ $rc -eq 1 ] && grep -q -- '$T' $T/e8 && grep -q directory $T/e8"
: > "$T/empty.jsonl"
timeout 20 "$BIN/rm_score" --model "$T/a.ckpt" --data "$T/empty.jsonl" 2>"$T/e9"
rc=$?
check "rm_score on an empty file is an error naming it (exit $rc)" "[ $rc -eq 1 ] && grep -q 'empty.jsonl: no records' $T/e9"

finish
