#!/usr/bin/env bash
# CurveZMQ between ppo_run and PPO workers started by hand (common/net/curve.h),
# on loopback tcp:// with a tiny model:
#  - a rollout worker with --curve-secret-file and --curve-allow serves a
#    ppo_run given its public key and an allowed client key; the policy's
#    weight sync reaches it under CURVE too (the run ends with the weights of
#    a run whose rollout worker ppo_run started itself);
#  - a client key not on the allow-list, and a ppo_run without CURVE, are
#    not served: ppo_run stops non-zero, naming the worker;
#  - half a key set and a bad key file are refused before anything starts.
set -u
BIN=$1
T=$(mktemp -d)
RW=
trap '[ -n "$RW" ] && kill $RW 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT; [ -n "${KEEP:-}" ] && echo "keeping $T"
. "$(dirname "$0")/lib/ppo.sh"
export OMP_NUM_THREADS=1

for k in server client other; do "$BIN/reward_server" --curve-keygen "$T/$k" >/dev/null || { echo "skip: libzmq without CURVE"; exit 77; }; done
cp "$T/client.public" "$T/allowed"
ppo_data "$T" 64 0
"$BIN/model_init" --dim 32 --layers 2 --heads 2 --tokenizer byte --out "$T/init.ckpt" 2>/dev/null
"$BIN/sft_run" --model "$T/init.ckpt" --data "$T/sft.jsonl" --out "$T/sft.ckpt" --lr 1e-2 --batch-size 16 --max-steps 10 2>/dev/null
PPO=(--policy "$T/sft.ckpt" --reward length:-0.1 --prompts "$T/prompts.jsonl" --advantage grpo --batch-size 4 --n 2
     --max-new-tokens 8 --lr 3e-3 --seed 3 --minibatch-size 4 --max-steps 2 --heartbeat-ms 200 --dead-after 5 --startup-timeout 30)
timeout 120 "$BIN/ppo_run" "${PPO[@]}" --out "$T/local.ckpt" 2>"$T/local.err"
check "ppo_run with its own rollout worker exits 0" "[ $? -eq 0 ]"

PORT=$((20000 + $$ % 20000))
EP=tcp://127.0.0.1:$PORT
"$BIN/rollout_worker" --bind $EP --curve-secret-file "$T/server.secret" --curve-allow "$T/allowed" 2>"$T/rw.err" &
RW=$!
timeout 120 "$BIN/ppo_run" "${PPO[@]}" --rollout-connect $EP --curve-server-key "$T/server.public" \
    --curve-secret-file "$T/client.secret" --out "$T/curve.ckpt" 2>"$T/curve.err"
check "ppo_run with a CURVE rollout worker and an allowed key exits 0 ($(tail -1 "$T/curve.err"))" "[ $? -eq 0 ]"
check "the worker ran with CURVE and its allow-list" "grep -q 'CURVE on, public key .*allow-list on' $T/rw.err"
check "the weight sync reached it: same weights as the local run" "[ \"\$(data $T/local.ckpt)\" = \"\$(data $T/curve.ckpt)\" ]"

timeout 60 "$BIN/ppo_run" "${PPO[@]}" --rollout-connect $EP --curve-server-key "$T/server.public" \
    --curve-secret-file "$T/other.secret" --out "$T/other.ckpt" 2>"$T/other.err"
rc=$?
check "a client key not on the allow-list: ppo_run stops non-zero ($rc), naming the worker and --curve-allow" \
    "[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'rollout worker 0 .*refused .*--curve-allow' $T/other.err && [ ! -e $T/other.ckpt ]"
timeout 60 "$BIN/ppo_run" "${PPO[@]}" --rollout-connect $EP --out "$T/plain.ckpt" 2>"$T/plain.err"
rc=$?
check "ppo_run without CURVE to a CURVE worker: stops non-zero ($rc), saying what to give" \
    "[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'handshake failed.*--curve-server-key' $T/plain.err && [ ! -e $T/plain.ckpt ]"

"$BIN/ppo_run" "${PPO[@]}" --rollout-connect $EP --curve-server-key "$T/server.public" --out "$T/x.ckpt" 2>"$T/x.err"
check "--curve-server-key without --curve-secret-file is refused" "[ $? -ne 0 ] && grep -q 'needs both' $T/x.err"
echo "not a key" >"$T/bad.key"
"$BIN/ppo_run" "${PPO[@]}" --rollout-connect $EP --curve-server-key "$T/bad.key" --curve-secret-file "$T/client.secret" \
    --out "$T/x.ckpt" 2>"$T/x.err"
check "a key file without a key is refused, naming it" "[ $? -ne 0 ] && grep -q 'bad.key' $T/x.err"
"$BIN/rollout_worker" --bind tcp://127.0.0.1:0 --curve-allow "$T/allowed" 2>"$T/y.err"
check "rollout_worker --curve-allow without --curve-secret-file is refused" "[ $? -ne 0 ] && grep -q 'needs --curve-secret-file' $T/y.err"
finish
