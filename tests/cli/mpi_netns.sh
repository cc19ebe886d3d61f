#!/usr/bin/env bash
# Two "hosts" on this machine: network namespaces made here, joined by a
# veth pair, OpenMPI restricted to TCP over that link (no shared memory).
# mpirun runs in the first; its rsh agent starts the second host's daemon
# in the second (ip netns exec), as ssh would on a real second machine.
#  - rank 1 runs in the other namespace;
#  - dpo_run on the 2 hosts with ZeRO-1 trains to 1 process's losses and
#    weights (within 1e-5); so does the same job with no mpirun, one rank
#    started by hand in each namespace with --dist-init at host A's address;
#    and with rank 0 given tcp://localhost (a name that is loopback on its
#    own host), as rank 0 listens on every address;
#  - PPO across the hosts: the policy as 2 ranks on the first (ppo_run
#    --policy-ranks 2), a rollout worker on the second (tcp:// with CURVE
#    keys and an allow-list), trains to
#    the weights of a one-process policy with a local rollout worker; so
#    does a policy of 2 ranks started by hand with --dist-init, one on each
#    host (ppo_run --policy-connect to rank 0), and a SIGTERM ends both.
# Skipped (77) without mpirun, an MPI build, or the right to make
# namespaces (root or CAP_NET_ADMIN).
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../fixtures/hf_tiny_qwen2
PREFS=$HERE/../fixtures/logprobs/prefs.jsonl
command -v mpirun >/dev/null || { echo "skip: no mpirun (apt-get install openmpi-bin libopenmpi-dev)"; exit 77; }
command -v ip >/dev/null || { echo "skip: no ip (iproute2)"; exit 77; }
# names unique to this run: namespaces and links are machine-wide
A=alA$$ B=alB$$
ip netns add "$A" 2>/dev/null || { echo "skip: cannot make network namespaces here (needs root or CAP_NET_ADMIN)"; exit 77; }
T=$(mktemp -d)
RW=
trap '[ -n "$RW" ] && kill $RW 2>/dev/null; ip netns del "$A" 2>/dev/null; ip netns del "$B" 2>/dev/null; rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

NET=10.216.77
ip netns add "$B" && ip link add "v$A" type veth peer name "v$B" && ip link set "v$A" netns "$A" &&
  ip link set "v$B" netns "$B" &&
  ip -n "$A" addr add $NET.1/24 dev "v$A" && ip -n "$A" link set "v$A" up && ip -n "$A" link set lo up &&
  ip -n "$B" addr add $NET.2/24 dev "v$B" && ip -n "$B" link set "v$B" up && ip -n "$B" link set lo up ||
  { echo "skip: could not wire the namespaces"; exit 77; }
cat > "$T/agent" <<EOF
#!/bin/sh
# OpenMPI's rsh agent: "agent HOST COMMAND..." runs COMMAND on HOST (its namespace)
host=\$1; shift
case \$host in $NET.1) ns=$A ;; $NET.2) ns=$B ;; *) echo "agent: unknown host \$host" >&2; exit 1 ;; esac
exec ip netns exec \$ns /bin/sh -c "\$*"
EOF
chmod +x "$T/agent"

export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# under ASan, OpenMPI's own allocations show as leaks: ranks skip that check
NOLEAK="ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
MPI=(timeout 120 env "$NOLEAK" ip netns exec "$A" mpirun --mca plm_rsh_agent "$T/agent" --host $NET.1,$NET.2 -np 2
     --mca btl self,tcp --mca btl_tcp_if_include $NET.0/24 --mca oob_tcp_if_include $NET.0/24)

"${MPI[@]}" sh -c 'echo "$OMPI_COMM_WORLD_RANK $(ip netns identify $$)"' >"$T/where" 2>"$T/where.err"
check "each rank runs in its own namespace ($(sort "$T/where" | tr '\n' ' '))" "sort $T/where | tr '\n' ' ' | grep -qx '0 $A 1 $B '"

DPO=(--policy "$MODEL" --data "$PREFS" --lr 1e-3 --batch-size 4 --max-steps 5)
"$BIN/dpo_run" "${DPO[@]}" --out "$T/d1.ckpt" --metrics "$T/d1.jsonl" 2>"$T/d1.err"
check "dpo_run, 1 process, exits 0" "[ $? -eq 0 ]"
"${MPI[@]}" "$BIN/dpo_run" "${DPO[@]}" --zero-stage 1 --out "$T/d2.ckpt" --metrics "$T/d2.jsonl" 2>"$T/d2.err"
rc=$?
if grep -q "built without MPI" "$T/d2.err"; then echo "skip: the programs were built without MPI"; exit 77; fi
check "dpo_run on 2 namespaced hosts exits 0 ($(tail -1 "$T/d2.err"))" "[ $rc -eq 0 ]"
DIFF=$(dirname "$0")/lib/ckpt_diff.py
dl=$(python3 "$DIFF" metrics "$T/d1.jsonl" "$T/d2.jsonl"); okl=$?
dw=$(python3 "$DIFF" ckpt "$T/d1.ckpt" "$T/d2.ckpt"); okw=$?
check "... with 1 process's losses ($dl) and weights ($dw) within 1e-5" "[ $okl -eq 0 ] && [ $okw -eq 0 ] && [ \$(grep -c '\"loss\"' $T/d2.jsonl) -eq 5 ]"

# The same job without mpirun: each host's rank started by hand with
# --dist-init at host A's address (rank 0 listens there, its ompi-server too).
RV=(env "$NOLEAK" OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=$NET.0/24 OMPI_MCA_oob_tcp_if_include=$NET.0/24)
RVPORT=$((20000 + ($$ + 7) % 20000))
timeout 60 ip netns exec "$A" "${RV[@]}" "$BIN/dpo_run" "${DPO[@]}" --zero-stage 1 --out "$T/d3.ckpt" --metrics "$T/d3.jsonl" \
    --dist-init tcp://$NET.1:$RVPORT --rank 0 --world-size 2 --dist-timeout 30 2>"$T/d3.0.err" &
rv0=$!
timeout 60 ip netns exec "$B" "${RV[@]}" "$BIN/dpo_run" "${DPO[@]}" --zero-stage 1 --out "$T/d3.ckpt" \
    --dist-init tcp://$NET.1:$RVPORT --rank 1 --world-size 2 --dist-timeout 30 2>"$T/d3.1.err"
rc1=$?
wait $rv0
rc0=$?
check "dpo_run with --dist-init, a rank started by hand on each host: exit 0 (rc $rc0 $rc1; $(tail -n 1 "$T/d3.1.err"))" "[ $rc0 -eq 0 ] && [ $rc1 -eq 0 ]"
dl=$(python3 "$DIFF" metrics "$T/d1.jsonl" "$T/d3.jsonl"); okl=$?
dw=$(python3 "$DIFF" ckpt "$T/d1.ckpt" "$T/d3.ckpt"); okw=$?
check "... with 1 process's losses ($dl) and weights ($dw) within 1e-5" "[ $okl -eq 0 ] && [ $okw -eq 0 ]"

# ---- PPO: policy ranks on host A, a rollout worker on host B
# Rank 0 given a name that resolves to loopback on its own host (as Debian's
# /etc/hosts maps the host's name to 127.0.1.1), rank 1 its address on the
# link: rank 0 listens on every address, so rank 1 reaches it (before:
# rank 0 listened on 127.0.0.1 alone and rank 1 waited --dist-timeout).
LHPORT=$((20000 + ($$ + 11) % 20000))
SHORT=(--policy "$MODEL" --data "$PREFS" --lr 1e-3 --batch-size 4 --max-steps 2 --out "$T/lh.ckpt" --world-size 2 --dist-timeout 8)
timeout 60 ip netns exec "$A" "${RV[@]}" "$BIN/dpo_run" "${SHORT[@]}" --dist-init tcp://localhost:$LHPORT --rank 0 2>"$T/lh.0.err" &
lh0=$!
timeout 60 ip netns exec "$B" "${RV[@]}" "$BIN/dpo_run" "${SHORT[@]}" --dist-init tcp://$NET.1:$LHPORT --rank 1 2>"$T/lh.1.err"
rc1=$?
wait $lh0
rc0=$?
check "rank 0 at tcp://localhost, rank 1 at its link address: exit 0 (rc $rc0 $rc1; $(tail -n 1 "$T/lh.1.err"))" "[ $rc0 -eq 0 ] && [ $rc1 -eq 0 ]"

. "$(dirname "$0")/lib/ppo.sh"
export OMP_NUM_THREADS=1
ppo_data "$T" 64 64
"$BIN/model_init" --dim 32 --layers 2 --heads 2 --tokenizer byte --out "$T/init.ckpt" 2>/dev/null
"$BIN/sft_run" --model "$T/init.ckpt" --data "$T/sft.jsonl" --out "$T/sft.ckpt" --lr 1e-2 --batch-size 16 --max-steps 10 2>/dev/null
PPO=(--policy "$T/sft.ckpt" --reward length:-0.1 --prompts "$T/prompts.jsonl" --advantage grpo --batch-size 4 --n 2
     --max-new-tokens 8 --lr 3e-3 --seed 3 --minibatch-size 4 --max-steps 2)
timeout 120 "$BIN/ppo_run" "${PPO[@]}" --out "$T/p1.ckpt" 2>"$T/p1.err"
check "ppo_run, one policy process and a local rollout worker, exits 0" "[ $? -eq 0 ]"
PORT=$((20000 + $$ % 20000))
"$BIN/reward_server" --curve-keygen "$T/worker" >/dev/null && "$BIN/reward_server" --curve-keygen "$T/run" >/dev/null
env "$NOLEAK" ip netns exec "$B" "$BIN/rollout_worker" --bind tcp://$NET.2:$PORT --curve-secret-file "$T/worker.secret" \
    --curve-allow "$T/run.public" 2>"$T/rw.err" &
RW=$!
timeout 120 env "$NOLEAK" OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo \
    ip netns exec "$A" "$BIN/ppo_run" "${PPO[@]}" --policy-ranks 2 --rollout-connect tcp://$NET.2:$PORT \
    --curve-server-key "$T/worker.public" --curve-secret-file "$T/run.secret" --out "$T/p2.ckpt" 2>"$T/p2.err"
check "ppo_run on host A, policy as 2 ranks, rollout worker on host B: exits 0 ($(tail -1 "$T/p2.err"))" "[ $? -eq 0 ]"
check "... the rollout worker in the other namespace served it, under CURVE" \
    "grep -q 'listening on tcp://$NET.2:$PORT' $T/rw.err && grep -q 'CURVE on' $T/rw.err"
pw=$(python3 "$DIFF" ckpt "$T/p1.ckpt" "$T/p2.ckpt"); okp=$?
check "... and the policy's weights equal the one-process run's ($pw, within 1e-5)" "[ $okp -eq 0 ]"

# The policy's ranks without mpirun: rank 0 on host A (serving ppo_run there),
# rank 1 on host B, met at host A's address; a SIGTERM to rank 0 ends both.
PVPORT=$((20000 + ($$ + 13) % 20000))
timeout 120 ip netns exec "$B" "${RV[@]}" "$BIN/ppo_policy" --dist-init tcp://$NET.1:$PVPORT --rank 1 --world-size 2 \
    --dist-timeout 30 2>"$T/pv.1.err" &
pv1=$!
timeout 120 ip netns exec "$A" "${RV[@]}" "$BIN/ppo_policy" --bind "ipc://$T/pv.sock" --dist-init tcp://$NET.1:$PVPORT \
    --rank 0 --world-size 2 --dist-timeout 30 2>"$T/pv.0.err" &
pv0=$!
timeout 120 ip netns exec "$A" "$BIN/ppo_run" "${PPO[@]}" --policy-connect "ipc://$T/pv.sock" --out "$T/p3.ckpt" 2>"$T/p3.err"
check "ppo_run on host A, policy ranks started by hand on hosts A and B (--dist-init): exits 0 ($(tail -1 "$T/p3.err"))" "[ $? -eq 0 ]"
pw=$(python3 "$DIFF" ckpt "$T/p1.ckpt" "$T/p3.ckpt"); okp=$?
check "... the policy's weights equal the one-process run's ($pw, within 1e-5)" "[ $okp -eq 0 ]"
kill -TERM "$(pgrep -P $pv0 | head -1)" 2>/dev/null
wait $pv0; rc0=$?
wait $pv1; rc1=$?
check "... and a SIGTERM to rank 0 ends both ranks with exit 0 (rc $rc0 $rc1)" "[ $rc0 -eq 0 ] && [ $rc1 -eq 0 ] && grep -q 'stopped by a signal to rank 0' $T/pv.1.err"

finish
