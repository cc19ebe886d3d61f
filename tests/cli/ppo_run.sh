#!/usr/bin/env bash
# ppo_run end to end on a tiny model (dim 32, 2 layers, byte tokenizer):
#  - the processes: policy, reference, reward_server and two rollout workers
#    started by ppo_run; metrics carry TRL's names and the phase times, all
#    finite; the toy reward (a reward model trained to prefer completions
#    full of the letter 'a') rises;
#  - --resume from a periodic checkpoint gives the unbroken run's metrics and
#    bit-identical final weights;
#  - faults: a rollout worker, the reference and the reward process each
#    killed with SIGKILL mid-run are noticed, restarted, and the run
#    completes every iteration; ppo_run itself killed with SIGKILL takes its
#    workers with it, and --resume from its newest checkpoint ends with the
#    same weights as an unbroken run; the next start removes the socket
#    folder the killed run left (and any other whose run is gone, never a
#    live run's);
#  - Ctrl-C (SIGINT to the whole process group, as a terminal sends it):
#    ppo_run saves the checkpoint to resume from and exits 130, and no
#    process is left behind;
#  - a reward_server started by hand is used through --reward-connect (with
#    --advantage rloo: no critic);
#  - bad usage gets one clear error; out-of-range numbers are refused before
#    anything starts.
# Every run is bounded by `timeout`.
set -u
BIN=$1
T=$(mktemp -d); [ -n "${KEEP:-}" ] && echo "keeping $T"
SP=
trap '[ -n "$SP" ] && kill $SP 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/ppo.sh"

ppo_data "$T" 128 128
"$BIN/model_init" --dim 32 --layers 2 --heads 2 --tokenizer byte --out "$T/init.ckpt" 2>/dev/null
"$BIN/sft_run" --model "$T/init.ckpt" --data "$T/sft.jsonl" --out "$T/sft.ckpt" --lr 1e-2 --batch-size 16 --max-steps 40 2>/dev/null
"$BIN/rm_train" "$T/prefs.jsonl" --model "$T/init.ckpt" --out "$T/rm.ckpt" --lr 1e-2 --batch-size 16 --max-steps 40 2>/dev/null
check "tiny SFT and reward models" "[ -s $T/sft.ckpt ] && [ -s $T/rm.ckpt ]"

common=(--policy "$T/sft.ckpt" --reward "$T/rm.ckpt" --prompts "$T/prompts.jsonl" --batch-size 8 --n 2
        --max-new-tokens 12 --lr 3e-3 --seed 3)

# ---- 1. integration: two rollout workers, 8 iterations, checkpoints every 4
timeout 120 "$BIN/ppo_run" "${common[@]}" --rollout-workers 2 --max-steps 8 --save-every 4 --out "$T/a.ckpt" \
    --metrics "$T/a.jsonl" 2>"$T/a.err"
check "ppo_run exits 0" "[ $? -eq 0 ]"
check "it started policy, reference, reward and two rollout processes" \
    "[ \$(grep -c 'started' $T/a.err) -eq 5 ] && grep -q 'started rollout worker 1' $T/a.err"
check "final policy and critic written" "[ -s $T/a.ckpt ] && [ -s $T/a-critic.ckpt ] && [ -s $T/a-step4.ckpt ] && [ -s $T/a-step4-critic.ckpt ]"
check "metrics: 8 lines with TRL's names, phase times, all finite" "python3 - $T/a.jsonl <<'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
need = ['objective/kl', 'objective/scores', 'objective/rlhf_reward', 'objective/non_score_reward', 'objective/entropy',
        'policy/approxkl_avg', 'policy/clipfrac_avg', 'loss/policy_avg', 'loss/value_avg', 'val/clipfrac_avg',
        'val/ratio', 'val/num_eos_tokens', 'val/explained_variance', 'lr', 'grad_norm', 'time/generate',
        'time/reference', 'time/reward', 'time/update', 'time/weight_sync', 'time/iteration']
ok = len(rows) == 8 and all(k in r for r in rows for k in need)
ok = ok and all(math.isfinite(v) for r in rows for v in r.values() if isinstance(v, (int, float)))
sys.exit(0 if ok else 1)
PY"
check "the toy reward rises" "python3 - $T/a.jsonl <<'PY'
import json, sys
s = [json.loads(l)['objective/scores'] for l in open(sys.argv[1])]
print('objective/scores', ' '.join('%.2f' % x for x in s))
sys.exit(0 if sum(s[-2:]) / 2 > s[0] + 1.0 else 1)
PY"
check "no worker left behind" "! pgrep -f \"$T/\" >/dev/null"

# ---- 2. --resume from the iteration-4 checkpoint
timeout 120 "$BIN/ppo_run" "${common[@]}" --rollout-workers 2 --max-steps 8 --save-every 4 --out "$T/b.ckpt" \
    --metrics "$T/b.jsonl" --resume "$T/a-step4.ckpt" 2>"$T/b.err"
check "resume exits 0" "[ $? -eq 0 ]"
check "resumed metrics equal the unbroken run's" "diff <(nontime $T/a.jsonl | tail -4) <(nontime $T/b.jsonl)"
check "resumed weights bit-identical" "[ \"\$(data $T/a.ckpt)\" = \"\$(data $T/b.ckpt)\" ]"

# ---- 3. faults: SIGKILL a rollout worker, the reference, the reward process
timeout 120 "$BIN/ppo_run" "${common[@]}" --rollout-workers 2 --max-steps 60 --out "$T/f.ckpt" --metrics "$T/f.jsonl" \
    2>"$T/f.err" &
RP=$!
wait_lines "$T/f.jsonl" 3 && kill -9 "$(pid_of 'rollout worker 1' "$T/f.err")"
wait_lines "$T/f.jsonl" 15 && kill -9 "$(pid_of 'reference process' "$T/f.err")"
wait_lines "$T/f.jsonl" 27 && kill -9 "$(pid_of 'reward process' "$T/f.err")"
wait $RP
check "the faulted run completes (exit 0)" "[ $? -eq 0 ]"
check "all 60 iterations logged" "[ \$(wc -l <$T/f.jsonl) -eq 60 ]"
for w in 'rollout worker 1' 'reference process' 'reward process'; do
    check "$w: noticed dead and restarted" "grep -q \"$w .* is dead\" $T/f.err && grep -q \"$w is back\" $T/f.err && [ \$(grep -c \"started $w\" $T/f.err) -eq 2 ]"
done

# ---- 4. ppo_run itself killed, then --resume from its newest checkpoint
timeout 120 "$BIN/ppo_run" "${common[@]}" --max-steps 30 --out "$T/u.ckpt" 2>/dev/null
"$BIN/ppo_run" "${common[@]}" --max-steps 30 --save-every 5 --out "$T/k.ckpt" --metrics "$T/k.jsonl" 2>"$T/k.err" &
RP=$!
( sleep 120; kill -9 $RP 2>/dev/null ) &
WD=$!
wait_lines "$T/k.jsonl" 12
kill -9 $RP
wait $RP 2>/dev/null
kill $WD 2>/dev/null
sleep 0.5
check "ppo_run killed mid-run: its workers died with it" "! pgrep -f \"$(grep -o 'ipc://[^ ]*policy.sock' $T/k.err | head -1)\" >/dev/null"
SD=$(grep -o 'ipc://[^ ]*policy.sock' "$T/k.err" | head -1 | sed 's|^ipc://||; s|/policy.sock$||')
check "SIGKILL left its socket folder behind" "[ -n '$SD' ] && [ -d '$SD' ]"
# two more folders of the same form: one whose owner has exited, one of a live process (this shell)
sh -c 'exit 0' & DP=$!; wait $DP
mkdir -p "/tmp/ppo_run.$DP.stale0" "/tmp/ppo_run.$$.alive0" && touch "/tmp/ppo_run.$DP.stale0/policy.sock"
last=$(ls "$T"/k-step*.ckpt | grep -v critic | sed 's/.*step\([0-9]*\).ckpt/\1/' | sort -n | tail -1)
timeout 120 "$BIN/ppo_run" "${common[@]}" --max-steps 30 --save-every 5 --out "$T/k.ckpt" --resume "$T/k-step$last.ckpt" 2>"$T/k2.err"
check "resume after SIGKILL (from iteration $last) exits 0" "[ $? -eq 0 ]"
check "and ends with the unbroken run's weights" "[ \"\$(data $T/u.ckpt)\" = \"\$(data $T/k.ckpt)\" ]"
check "the next start removed the killed run's socket folder" "[ ! -e '$SD' ] && grep -q 'removed $SD' $T/k2.err"
check "and the one whose owner had exited" "[ ! -e /tmp/ppo_run.$DP.stale0 ]"
check "but not a live process's" "[ -d /tmp/ppo_run.$$.alive0 ]"
rm -rf "/tmp/ppo_run.$DP.stale0" "/tmp/ppo_run.$$.alive0"

# ---- 5. a reward_server started by hand, RLOO (no critic)
"$BIN/reward_server" --model "$T/rm.ckpt" --bind "ipc://$T/rm.sock" 2>"$T/srv.err" &
SP=$!
timeout 120 "$BIN/ppo_run" "${common[@]}" --reward-connect "ipc://$T/rm.sock" --advantage rloo --max-steps 3 \
    --out "$T/r.ckpt" --metrics "$T/r.jsonl" 2>"$T/r.err"
check "--reward-connect run exits 0" "[ $? -eq 0 ]"
check "it started no reward process and no critic" "! grep -q 'started reward' $T/r.err && [ ! -e $T/r-critic.ckpt ] && [ \$(wc -l <$T/r.jsonl) -eq 3 ]"
check "the hand-started server served it" "kill -0 $SP"
kill $SP; wait $SP 2>/dev/null; SP=
check "server served 3 batches" "grep -q 'served 3 requests' $T/srv.err"

# ---- 6. Ctrl-C: SIGINT to ppo_run's whole process group (its own, by setsid), as a terminal sends it
setsid -w "$BIN/ppo_run" "${common[@]}" --max-steps 300 --out "$T/c.ckpt" --metrics "$T/c.jsonl" 2>"$T/c.err" &
RP=$!
wait_lines "$T/c.jsonl" 3
PG=$(ps -o pgid= -p $RP | tr -d ' ')
( sleep 60; kill -9 $RP 2>/dev/null ) &
WD=$!
if [ -n "$PG" ] && [ "$PG" != "$(ps -o pgid= -p $$ | tr -d ' ')" ]; then kill -INT -- -"$PG"; fi
wait $RP
rc=$?
kill $WD 2>/dev/null
check "Ctrl-C: ppo_run saves and exits 130" "[ $rc -eq 130 ] && grep -q 'interrupted after iteration' $T/c.err"
check "Ctrl-C: the checkpoint to --resume from is written" "ls $T/c-step*.ckpt >/dev/null 2>&1 && [ ! -e $T/c.ckpt ]"
sleep 0.5
alive() { for p in $(sed -n 's/.*started .* (pid \([0-9]*\)).*/\1/p' "$1"); do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
check "Ctrl-C: no worker left behind" "[ \$(grep -c 'started' $T/c.err) -eq 4 ] && ! alive $T/c.err"

# ---- 7. usage errors
"$BIN/ppo_run" --policy "$T/sft.ckpt" --prompts "$T/prompts.jsonl" --out "$T/x.ckpt" 2>"$T/e1.err"
check "no reward model: exit 1 with a sentence" "[ $? -eq 1 ] && grep -q 'reward' $T/e1.err"
"$BIN/ppo_run" "${common[@]}" --advantage rloo --n 1 --out "$T/x.ckpt" 2>"$T/e2.err"
check "rloo with --n 1 refused" "[ $? -eq 1 ] && grep -q 'n 2 or more' $T/e2.err"
# numbers out of range: the parser refuses them (exit 2, the flag named) before anything starts
for bad in "kl-coef -0.1" "cliprange 1" "cliprange-value -1" "gamma 1.5" "lam -0.5" "kl-horizon 0" "top-p 1.5" \
           "temperature -1" "top-k -1" "n 0" "max-new-tokens 0" "ppo-epochs 0" "minibatch-size -1" "rollout-workers 0" \
           "heartbeat-ms 0" "dead-after 0" "startup-timeout 0" "max-restarts -1" "score-clip -1" "vf-coef -1" \
           "missing-eos-penalty -1" "critic-lr -1" "kl-loss-coef -1" "kl-target -1" "max-prompt-length -1"; do
    set -- $bad
    "$BIN/ppo_run" "${common[@]}" --out "$T/x.ckpt" --$1 $2 2>"$T/e3.err"
    check "--$1 $2 refused" "[ $? -eq 2 ] && grep -q -- '--$1' $T/e3.err && ! grep -q started $T/e3.err"
done
# and what a flag's check cannot say
for bad in "cliprange 0" "top-p 0" "rollout-workers 65"; do
    set -- $bad
    "$BIN/ppo_run" "${common[@]}" --out "$T/x.ckpt" --$1 $2 2>"$T/e3.err"
    check "--$1 $2 refused" "[ $? -eq 1 ] && grep -q -- '--$1 $2' $T/e3.err && ! grep -q started $T/e3.err"
done
for w in ppo_policy ppo_ref rollout_worker; do
    "$BIN/$w" 2>"$T/e4.err"
    check "$w without --bind refused" "[ $? -eq 1 ] && grep -q -- '--bind is required' $T/e4.err"
done
"$BIN/ppo_ref" --bind "ipc://$T/never.sock" --max-batch-tokens 0 2>"$T/e4.err"
check "ppo_ref --max-batch-tokens 0 refused" "[ $? -eq 2 ] && grep -q -- '--max-batch-tokens' $T/e4.err"

finish ppo_run
