#!/usr/bin/env bash
# The PPO policy as N ranks started by hand, without mpirun: `ppo_policy
# --dist-init tcp://HOST:PORT --rank R --world-size N` (rank 0 with --bind
# EP), driven by `ppo_run --policy-connect EP`, on a tiny model, 1 OpenMP
# thread per rank:
#  - GAE with a critic on 2 ranks ends with the policy and critic weights of
#    1 process within 1e-5 (the check ppo_dist.sh makes for mpirun's ranks);
#  - a SIGTERM to rank 0 (the end of a run: what mpirun gets from ppo_run)
#    ends every rank with exit 0 and nothing left running, ompi-server
#    included; a SIGTERM to another rank (3 ranks) does the same;
#  - a rank SIGKILLed mid-run stops rank 0 within seconds with one line
#    naming it and the checkpoint ppo_run can --resume from;
#  - rank 0 without --bind is refused before the rendezvous.
# Skipped (77) without OpenMPI's ompi-server or when built without MPI.
set -u
BIN=$1
command -v ompi-server >/dev/null || { echo "skip: no ompi-server (apt-get install openmpi-bin libopenmpi-dev)"; exit 77; }
T=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT; [ -n "${KEEP:-}" ] && echo "keeping $T"
. "$(dirname "$0")/lib/ppo.sh"
export OMP_NUM_THREADS=1
# shared memory and loopback only (as dist_init.sh)
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
# OpenMPI's own allocations show as leaks under ASan: ranks skip the leak check
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
close() { python3 "$(dirname "$0")/lib/ckpt_diff.py" ckpt "$1" "$2"; }
gone() { ! ps -o stat= -p "$1" | grep -qv '^Z'; } # no such process, or a zombie of a parent gone

ppo_data "$T" 128 128
"$BIN/model_init" --dim 32 --layers 2 --heads 2 --tokenizer byte --out "$T/init.ckpt" 2>/dev/null
"$BIN/sft_run" --model "$T/init.ckpt" --data "$T/sft.jsonl" --out "$T/sft.ckpt" --lr 1e-2 --batch-size 16 --max-steps 20 2>/dev/null
"$BIN/rm_train" "$T/prefs.jsonl" --model "$T/init.ckpt" --out "$T/rm.ckpt" --lr 1e-2 --batch-size 16 --max-steps 20 2>/dev/null
check "tiny SFT and reward models" "[ -s $T/sft.ckpt ] && [ -s $T/rm.ckpt ]"

# policy NAME N: start ranks N-1 .. 0 of a policy (the last first; rank 0
# serves ipc://$T/NAME.sock); P[r] = rank r's pid, its stderr $T/NAME.R.err.
policy() {
  local name=$1 n=$2 port r bind
  port=$(free_port)
  P=()
  for r in $(seq $((n - 1)) -1 0); do
    bind=(); [ "$r" -eq 0 ] && bind=(--bind "ipc://$T/$name.sock")
    "$BIN/ppo_policy" "${bind[@]}" --dist-init "tcp://127.0.0.1:$port" --rank "$r" --world-size "$n" --dist-timeout 30 \
        2>"$T/$name.$r.err" &
    P[r]=$!
    PIDS+=($!)
  done
}
# stopped NAME N: wait for the N ranks (20 s at most); RCS = their exit statuses
stopped() {
  local r k
  RCS=""
  for r in $(seq 0 $(($2 - 1))); do
    for k in $(seq 200); do kill -0 "${P[r]}" 2>/dev/null || break; sleep 0.1; done
    kill -0 "${P[r]}" 2>/dev/null && kill -KILL "${P[r]}"
    wait "${P[r]}"; RCS="$RCS $?"
  done
}

gae=(--policy "$T/sft.ckpt" --reward "$T/rm.ckpt" --prompts "$T/prompts.jsonl" --batch-size 6 --n 2 --max-new-tokens 10
     --lr 3e-3 --seed 5 --ppo-epochs 2 --minibatch-size 6 --kl-coef 0.05)
timeout 120 "$BIN/ppo_run" "${gae[@]}" --max-steps 2 --out "$T/g1.ckpt" 2>"$T/g1.err"
check "GAE, policy as 1 process: exits 0" "[ $? -eq 0 ]"

policy g2 2
timeout 120 "$BIN/ppo_run" "${gae[@]}" --max-steps 2 --policy-connect "ipc://$T/g2.sock" --out "$T/g2.ckpt" 2>"$T/g2.err"
rc=$?
if grep -q "has no MPI" "$T/g2.0.err"; then echo "skip: the programs were built without MPI"; exit 77; fi
check "GAE, ppo_run --policy-connect to 2 hand-started ranks: exits 0 ($(tail -n 1 "$T/g2.err"))" "[ $rc -eq 0 ]"
check "ppo_policy said it runs as 2 ranks" "grep -q 'ppo_policy: 2 ranks (data parallel)' $T/g2.0.err"
check "2 hand-started ranks: the policy's weights equal 1 process's ($(close "$T/g1.ckpt" "$T/g2.ckpt"))" "close $T/g1.ckpt $T/g2.ckpt >/dev/null"
check "2 hand-started ranks: the critic's weights equal 1 process's ($(close "$T/g1-critic.ckpt" "$T/g2-critic.ckpt"))" \
    "close $T/g1-critic.ckpt $T/g2-critic.ckpt >/dev/null"
server=$(pgrep -P "${P[0]}" -x ompi-server)
kids=$(pgrep -P "${P[0]},${P[1]}" | tr '\n' ' ') # ompi-server and each singleton's orted
t0=$(date +%s%N)
kill -TERM "${P[0]}"
stopped g2 2
ms=$((($(date +%s%N) - t0) / 1000000))
check "a SIGTERM to rank 0 ends both ranks with exit 0 (rc$RCS, ${ms} ms)" "[ '$RCS' = ' 0 0' ] && [ $ms -lt 10000 ]"
check "... rank 1 says who stopped it" "grep -q 'the job was stopped by a signal to rank 0; leaving' $T/g2.1.err"
check "... and rank 0's ompi-server is gone (pid ${server:-none})" "[ -n '$server' ] && ! kill -0 $server 2>/dev/null"
sleep 0.5
left=; for k in $kids; do gone "$k" || left="$left $k"; done
check "... and so is every process the ranks started (${kids:-none}; left:${left:- none})" "[ -n '$kids' ] && [ -z '$left' ]"

# 3 ranks, idle: a SIGTERM to rank 2 stops all three, rank 0 last.
policy i3 3
for _ in $(seq 300); do grep -q 'listening on' "$T/i3.0.err" 2>/dev/null && break; sleep 0.1; done
server=$(pgrep -P "${P[0]}" -x ompi-server)
kill -TERM "${P[2]}"
stopped i3 3
check "3 ranks: a SIGTERM to rank 2 ends all three with exit 0 (rc$RCS)" "[ '$RCS' = ' 0 0 0' ]"
check "... each of ranks 0 and 1 says rank 2 stopped it" \
    "grep -q 'stopped by a signal to rank 2' $T/i3.0.err && grep -q 'stopped by a signal to rank 2' $T/i3.1.err"
check "... and ompi-server is gone (pid ${server:-none})" "[ -n '$server' ] && ! kill -0 $server 2>/dev/null"

# A rank SIGKILLed mid-run: rank 0 stops at once, naming it and the last checkpoint.
policy k2 2
timeout 120 "$BIN/ppo_run" "${gae[@]}" --max-steps 100000 --save-every 2 --policy-connect "ipc://$T/k2.sock" \
    --out "$T/k.ckpt" 2>"$T/k.err" &
run=$!
for _ in $(seq 300); do ls "$T"/k-step*.ckpt >/dev/null 2>&1 && break; sleep 0.1; done
server=$(pgrep -P "${P[0]}" -x ompi-server)
t0=$(date +%s%N)
kill -KILL "${P[1]}"
stopped k2 2
ms=$((($(date +%s%N) - t0) / 1000000))
wait $run
rcrun=$?
line=$(grep 'the job was stopped' "$T/k2.0.err")
check "a SIGKILLed rank 1 ends rank 0 with exit 1 within seconds (rc$RCS, ${ms} ms)" "[ '$RCS' = ' 1 137' ] && [ $ms -lt 10000 ]"
check "... in one line: $line" "[ \$(grep -c 'the job was stopped' $T/k2.0.err) -eq 1 ] && grep -q 'rank 1 (pid ${P[1]} on [^)]*) was lost' $T/k2.0.err"
ck=$(sed -n 's/.*resume with --resume \([^ ]*\) .*/\1/p' "$T/k2.0.err")
check "... naming a checkpoint that exists ($ck)" "[ -n '$ck' ] && [ -f '$ck' ]"
check "... ppo_run stops too (rc $rcrun)" "[ $rcrun -ne 0 ] && [ $rcrun -ne 124 ]"
sleep 0.5
check "... and ompi-server is gone (pid ${server:-none})" "[ -n '$server' ] && gone $server"
# rank 0 needs --bind (it serves ppo_run): refused before any rank waits for it
"$BIN/ppo_policy" --dist-init "tcp://127.0.0.1:$(free_port)" --rank 0 --world-size 2 2>"$T/nb.err"
rc=$?
check "rank 0 without --bind: refused at once (rc $rc: $(tail -n 1 "$T/nb.err"))" "[ $rc -eq 1 ] && grep -q -- '--bind is required on rank 0' $T/nb.err"
finish ppo_dist_init
