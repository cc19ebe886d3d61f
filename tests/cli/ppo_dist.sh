#!/usr/bin/env bash
# The PPO policy as N data-parallel ranks (ppo_run --policy-ranks N, which
# starts `mpirun -np N ppo_policy`), on a tiny model, 1 OpenMP thread per rank:
#  - GAE with a critic (token-mean loss, two minibatches, two epochs) on 2
#    ranks ends with the policy and critic weights of 1 process within 1e-5,
#    and so do 3 ranks (uneven shards of a minibatch);
#  - GRPO without a critic and a sequence-mean loss on 2 ranks, the same;
#  - the update metrics are merged over the ranks (tokens/s counts them all),
#    and no policy rank is left running after the run;
#  - --policy-ranks with --policy-connect is refused with the command to use.
# Skipped (77) without mpirun or when the programs were built without MPI.
set -u
BIN=$1
command -v mpirun >/dev/null || { echo "skip: no mpirun (apt-get install openmpi-bin libopenmpi-dev)"; exit 77; }
T=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT; [ -n "${KEEP:-}" ] && echo "keeping $T"
. "$(dirname "$0")/lib/ppo.sh"
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
# OpenMPI's own allocations show as leaks under ASan: ranks skip the leak check
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0

ppo_data "$T" 128 128
"$BIN/model_init" --dim 32 --layers 2 --heads 2 --tokenizer byte --out "$T/init.ckpt" 2>/dev/null
"$BIN/sft_run" --model "$T/init.ckpt" --data "$T/sft.jsonl" --out "$T/sft.ckpt" --lr 1e-2 --batch-size 16 --max-steps 20 2>/dev/null
"$BIN/rm_train" "$T/prefs.jsonl" --model "$T/init.ckpt" --out "$T/rm.ckpt" --lr 1e-2 --batch-size 16 --max-steps 20 2>/dev/null
check "tiny SFT and reward models" "[ -s $T/sft.ckpt ] && [ -s $T/rm.ckpt ]"

# max |a - b| over every F32 tensor of two .ckpt files (within 1e-5: exit 0)
close() { python3 "$(dirname "$0")/lib/ckpt_diff.py" ckpt "$1" "$2"; }

gae=(--policy "$T/sft.ckpt" --reward "$T/rm.ckpt" --prompts "$T/prompts.jsonl" --batch-size 6 --n 2 --max-new-tokens 10
     --lr 3e-3 --seed 5 --ppo-epochs 2 --minibatch-size 6 --max-steps 2 --kl-coef 0.05)
run() { # NAME RANKS ARGS...: one ppo_run; its exit status
    local name=$1 ranks=$2; shift 2
    timeout 180 "$BIN/ppo_run" "$@" --policy-ranks "$ranks" --out "$T/$name.ckpt" --metrics "$T/$name.jsonl" 2>"$T/$name.err"
}
run g1 1 "${gae[@]}"
check "GAE, policy as 1 process: exits 0" "[ $? -eq 0 ]"
run g2 2 "${gae[@]}"
rc=$?
if grep -q "built without MPI" "$T/g2.err"; then echo "skip: the programs were built without MPI"; exit 77; fi
check "GAE, policy as 2 ranks: exits 0 ($(tail -1 "$T/g2.err"))" "[ $rc -eq 0 ]"
check "ppo_policy said it runs as 2 ranks" "grep -q 'ppo_policy: 2 ranks (data parallel)' $T/g2.err"
check "2 ranks: the policy's weights equal 1 process's ($(close "$T/g1.ckpt" "$T/g2.ckpt"))" "close $T/g1.ckpt $T/g2.ckpt >/dev/null"
check "2 ranks: the critic's weights equal 1 process's ($(close "$T/g1-critic.ckpt" "$T/g2-critic.ckpt"))" \
    "close $T/g1-critic.ckpt $T/g2-critic.ckpt >/dev/null"
check "2 ranks: the merged update metrics equal 1 process's" "python3 - $T/g1.jsonl $T/g2.jsonl <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
keys = ['loss/policy_avg', 'loss/value_avg', 'grad_norm', 'critic/grad_norm', 'update/optimizer_steps']
ok = len(a) == len(b) == 2 and all(abs(x[k] - y[k]) <= 1e-4 * max(1, abs(x[k])) for x, y in zip(a, b) for k in keys)
sys.exit(0 if ok else 1)
PY"
ep=$(grep -o 'started policy process (pid [0-9]*) on .*' "$T/g2.err" | sed 's/.* on //')
check "no policy rank is left running (policy on ${ep:-?})" "[ -n '$ep' ] && ! pgrep -f 'ppo_policy --bind $ep' >/dev/null"
run g3 3 "${gae[@]}"
check "GAE, policy as 3 ranks (uneven shards): exits 0" "[ $? -eq 0 ]"
check "3 ranks: the policy's weights equal 1 process's ($(close "$T/g1.ckpt" "$T/g3.ckpt"))" "close $T/g1.ckpt $T/g3.ckpt >/dev/null"

grpo=(--policy "$T/sft.ckpt" --reward "$T/rm.ckpt" --prompts "$T/prompts.jsonl" --batch-size 4 --n 4 --max-new-tokens 10
      --lr 3e-3 --seed 7 --advantage grpo --loss-agg seq-mean-token-mean --ppo-epochs 2 --minibatch-size 8 --max-steps 2)
run r1 1 "${grpo[@]}"
check "GRPO, policy as 1 process: exits 0" "[ $? -eq 0 ]"
run r2 2 "${grpo[@]}"
check "GRPO, policy as 2 ranks: exits 0" "[ $? -eq 0 ]"
check "GRPO, seq-mean-token-mean: 2 ranks' weights equal 1 process's ($(close "$T/r1.ckpt" "$T/r2.ckpt"))" \
    "close $T/r1.ckpt $T/r2.ckpt >/dev/null"

"$BIN/ppo_run" "${gae[@]}" --policy-ranks 2 --policy-connect ipc:///nonexistent --out "$T/x.ckpt" 2>"$T/x.err"
check "--policy-ranks with --policy-connect: refused, naming mpirun" "[ $? -ne 0 ] && grep -q 'mpirun -np 2 ppo_policy' $T/x.err"
finish
