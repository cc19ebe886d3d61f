#!/usr/bin/env bash
# Data-parallel training under mpirun (common/train/dist.h), on the tiny
# Qwen2 fixture, 1 OpenMP thread per rank:
#  - sft_run on 2 ranks (plain data parallelism, grad-accum 2, an epoch
#    boundary, a micro-batch split by loss tokens) gives the losses and
#    weights of 1 process within 1e-5; on 3 ranks (uneven shards) too;
#  - the gradient sum overlaps the backward pass (--dist-overlap 1, the
#    default: layer buckets started from the backward's hook) and gives the
#    weights of --dist-overlap 0 (one all-reduce after the backward);
#  - dpo_run and rm_train on 2 ranks with ZeRO-1 (each rank keeps half the moments)
#    equals 1 process; rank 0 alone writes metrics and checkpoints;
#  - --resume with another number of ranks: a 2-rank checkpoint resumed by
#    1 process and a 1-process checkpoint resumed by 2 ranks end where the
#    unbroken runs end;
#  - ranks started with different flags (mpirun A : B) are refused with
#    one line naming the flag;
#  - a SIGINT sent to one rank (not through mpirun) is said by that rank;
#  - a rank SIGKILLed mid-run ends the job non-zero within seconds with one
#    line naming the lost rank and a whole checkpoint to resume from; a
#    hung (stopped) rank ends it after --dist-timeout with the same advice.
# Skipped (77) without mpirun or when the programs were built without MPI.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../fixtures/hf_tiny_qwen2
PREFS=$HERE/../fixtures/logprobs/prefs.jsonl
command -v mpirun >/dev/null || { echo "skip: no mpirun (apt-get install openmpi-bin libopenmpi-dev)"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# shared memory and loopback only: nothing to probe, no warnings about other networks
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
# Under ASan (CI's sanitizer pass) OpenMPI's own allocations show as leaks at
# exit: ranks skip the leak check; memory errors are still caught, and the
# 1-process runs of the same code keep theirs.
NOLEAK="ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
MPI=(timeout 120 env "$NOLEAK" mpirun --oversubscribe)

. "$(dirname "$0")/lib/dist_data.sh"
uneven_sft "$T/sft.jsonl"
# max |a - b| over the F32 tensors of two .ckpt files, or the losses of two metrics files (within 1e-5: exit 0)
close() { python3 "$(dirname "$0")/lib/ckpt_diff.py" "$@"; }

SFT=(--model "$MODEL" --data "$T/sft.jsonl" --lr 5e-4 --batch-size 4 --grad-accum 2 --max-length 64 --max-steps 4)
"$BIN/sft_run" "${SFT[@]}" --out "$T/s1.ckpt" --metrics "$T/s1.jsonl" 2>"$T/s1.err"
check "sft_run, 1 process, exits 0" "[ $? -eq 0 ]"
"${MPI[@]}" -np 2 "$BIN/sft_run" "${SFT[@]}" --out "$T/s2.ckpt" --metrics "$T/s2.jsonl" 2>"$T/s2.err"
rc=$?
if grep -q "built without MPI" "$T/s2.err"; then echo "skip: the programs were built without MPI"; exit 77; fi
check "sft_run, 2 ranks, exits 0 ($(tail -1 "$T/s2.err"))" "[ $rc -eq 0 ]"
check "sft_run: 2 ranks' losses equal 1 process's ($(close metrics "$T/s1.jsonl" "$T/s2.jsonl"))" "close metrics $T/s1.jsonl $T/s2.jsonl >/dev/null"
check "sft_run: 2 ranks' weights equal 1 process's ($(close ckpt "$T/s1.ckpt" "$T/s2.ckpt"))" "close ckpt $T/s1.ckpt $T/s2.ckpt >/dev/null"
check "sft_run: the gradient sums overlap the backward: $(grep 'buckets were started' "$T/s2.err")" \
  "grep -q 'overlap the backward pass: [1-9][0-9]* layer buckets' $T/s2.err && grep -q ': [1-9][0-9]* of [0-9]* gradient buckets were started during the backward' $T/s2.err"
"${MPI[@]}" -np 2 "$BIN/sft_run" "${SFT[@]}" --dist-overlap 0 --out "$T/s2p.ckpt" --metrics "$T/s2p.jsonl" 2>"$T/s2p.err"
check "sft_run, 2 ranks, --dist-overlap 0, exits 0" "[ $? -eq 0 ] && grep -q 'after the backward pass (--dist-overlap 0)' $T/s2p.err"
check "... the overlapped sums give its weights ($(close ckpt "$T/s2p.ckpt" "$T/s2.ckpt"))" "close ckpt $T/s2p.ckpt $T/s2.ckpt >/dev/null"
check "... and its losses ($(close metrics "$T/s2p.jsonl" "$T/s2.jsonl"))" "close metrics $T/s2p.jsonl $T/s2.jsonl >/dev/null"
check "rank 0 alone logs: one metrics line per step" "[ \$(grep -c '\"loss\"' $T/s2.jsonl) -eq 4 ]"
check "the merged num_tokens is the whole micro-batch's" "diff <(grep -o '\"num_tokens\": [0-9.]*' $T/s1.jsonl) <(grep -o '\"num_tokens\": [0-9.]*' $T/s2.jsonl)"
"${MPI[@]}" -np 3 "$BIN/sft_run" "${SFT[@]}" --out "$T/s3.ckpt" --metrics "$T/s3.jsonl" 2>"$T/s3.err"
check "sft_run, 3 ranks (uneven shards), exits 0" "[ $? -eq 0 ]"
check "sft_run: 3 ranks' weights equal 1 process's ($(close ckpt "$T/s1.ckpt" "$T/s3.ckpt"))" "close ckpt $T/s1.ckpt $T/s3.ckpt >/dev/null"

DPO=(--policy "$MODEL" --data "$PREFS" --lr 1e-3 --batch-size 4 --max-steps 5 --save-every 2 --save-total-limit 0)
"$BIN/dpo_run" "${DPO[@]}" --out "$T/d1.ckpt" --metrics "$T/d1.jsonl" 2>"$T/d1.err"
check "dpo_run, 1 process, exits 0" "[ $? -eq 0 ]"
"${MPI[@]}" -np 2 "$BIN/dpo_run" "${DPO[@]}" --zero-stage 1 --out "$T/d2.ckpt" --metrics "$T/d2.jsonl" 2>"$T/d2.err"
check "dpo_run, 2 ranks, ZeRO-1, exits 0 ($(tail -1 "$T/d2.err"))" "[ $? -eq 0 ]"
check "dpo_run: 2 ranks' losses equal 1 process's ($(close metrics "$T/d1.jsonl" "$T/d2.jsonl"))" "close metrics $T/d1.jsonl $T/d2.jsonl >/dev/null"
check "dpo_run: 2 ranks' weights equal 1 process's ($(close ckpt "$T/d1.ckpt" "$T/d2.ckpt"))" "close ckpt $T/d1.ckpt $T/d2.ckpt >/dev/null"
check "dpo_run with ZeRO-1 overlaps the gradient sums too" "grep -q ': [1-9][0-9]* of [0-9]* gradient buckets were started during the backward' $T/d2.err"
check "ZeRO-1 says each rank holds half the moments" \
  "python3 -c 'import re,sys; m=re.search(r\"moments ([0-9.]+) MiB per rank \\(([0-9.]+) MiB unsharded\", open(\"$T/d2.err\").read()); sys.exit(0 if m and abs(2*float(m[1])-float(m[2])) <= 0.11 else 1)'"
check "the 2-rank checkpoints are written once, whole" "[ -f $T/d2-step2.ckpt ] && [ -f $T/d2-step4.ckpt ] && [ \$(ls $T | grep -c tmp) -eq 0 ]"
"$BIN/dpo_run" "${DPO[@]}" --out "$T/r1.ckpt" --metrics "$T/r1.jsonl" --resume "$T/d2-step4.ckpt" 2>"$T/r1.err"
check "a 2-rank ZeRO-1 checkpoint resumes in 1 process" "[ $? -eq 0 ] && grep -q 'at step 4' $T/r1.err"
check "... and ends where the unbroken run ends ($(close ckpt "$T/d1.ckpt" "$T/r1.ckpt"))" "close ckpt $T/d1.ckpt $T/r1.ckpt >/dev/null"
"${MPI[@]}" -np 2 "$BIN/dpo_run" "${DPO[@]}" --zero-stage 1 --out "$T/r2.ckpt" --metrics "$T/r2.jsonl" --resume "$T/d1-step2.ckpt" 2>"$T/r2.err"
check "a 1-process checkpoint resumes on 2 ranks" "[ $? -eq 0 ]"
check "... with the same last 3 losses ($(close metrics <(tail -3 "$T/d1.jsonl") "$T/r2.jsonl"))" "close metrics <(tail -3 $T/d1.jsonl) $T/r2.jsonl >/dev/null"
check "... and weights ($(close ckpt "$T/d1.ckpt" "$T/r2.ckpt"))" "close ckpt $T/d1.ckpt $T/r2.ckpt >/dev/null"

RM=(--model "$MODEL" --data "$PREFS" --lr 2e-4 --batch-size 4 --max-steps 4)
"$BIN/rm_train" "${RM[@]}" --out "$T/m1.ckpt" --metrics "$T/m1.jsonl" 2>"$T/m1.err"
check "rm_train, 1 process, exits 0" "[ $? -eq 0 ]"
"${MPI[@]}" -np 2 "$BIN/rm_train" "${RM[@]}" --zero-stage 1 --out "$T/m2.ckpt" --metrics "$T/m2.jsonl" 2>"$T/m2.err"
check "rm_train, 2 ranks, exits 0 ($(tail -1 "$T/m2.err"))" "[ $? -eq 0 ]"
check "rm_train: 2 ranks' losses equal 1 process's ($(close metrics "$T/m1.jsonl" "$T/m2.jsonl"))" "close metrics $T/m1.jsonl $T/m2.jsonl >/dev/null"
check "rm_train: rank 0 alone stores the reward statistics" "[ \$(grep -c 'stored in' $T/m2.err) -eq 1 ]"
check "rm_train: 2 ranks' weights equal 1 process's ($(close ckpt "$T/m1.ckpt" "$T/m2.ckpt"))" "close ckpt $T/m1.ckpt $T/m2.ckpt >/dev/null"

# mpirun can start ranks with different flags too (MPMD: A : B): refused at
# once with one line, rank 0's (before: rank 1 trained with another seed).
"${MPI[@]}" -np 1 "$BIN/rm_train" "${RM[@]}" --out "$T/x.ckpt" : -np 1 "$BIN/rm_train" "${RM[@]}" --seed 7 --out "$T/x.ckpt" 2>"$T/x.err"
rc=$?
check "ranks started with another --seed: refused, exit non-zero (rc $rc): $(grep 'every rank must' "$T/x.err")" \
  "[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'rank 1 was started with --seed 7, rank 0 with --seed 42; every rank must be given the same' $T/x.err && [ ! -f $T/x.ckpt ]"
check "... said once, no rank reported lost" "[ \$(grep -c 'every rank must' $T/x.err) -eq 1 ] && ! grep -q 'was lost' $T/x.err"

# The pid of rank ${3:-1} of the job under `timeout` pid $1, once it has written a checkpoint.
rank1_of() {
  for _ in $(seq 100); do
    sleep 0.1
    ls "$2"-step*.ckpt >/dev/null 2>&1 || continue
    for mp in $(pgrep -P "$1"); do
      for p in $(pgrep -P "$mp"); do
        tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=${3:-1}" && { echo "$p"; return; }
      done
    done
  done
}
LONG=(--model "$MODEL" --data "$T/sft.jsonl" --lr 1e-3 --batch-size 4 --max-length 64 --max-steps 1000000 --save-every 3)

# A rank killed mid-run: the other stops within seconds and says which and where to resume.
timeout 60 env "$NOLEAK" mpirun --oversubscribe -np 2 "$BIN/sft_run" "${LONG[@]}" --out "$T/k.ckpt" 2>"$T/k.err" &
tpid=$!
victim=$(rank1_of $tpid "$T/k")
if [ -n "$victim" ]; then
  t0=$(date +%s%N)
  kill -KILL "$victim"
  wait $tpid
  rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  check "a SIGKILLed rank ends the job non-zero (rc $rc)" "[ $rc -ne 0 ] && [ $rc -ne 124 ]"
  check "... within seconds (${ms} ms)" "[ $ms -lt 10000 ]"
  line=$(grep 'the job was stopped' "$T/k.err")
  check "... with one line naming the lost rank: $line" "[ \$(grep -c 'the job was stopped' $T/k.err) -eq 1 ] && grep -q 'rank 1 (pid $victim) was lost' $T/k.err"
  ck=$(sed -n 's/.*resume with --resume \([^ ]*\) .*/\1/p' "$T/k.err")
  check "... and a checkpoint that exists ($ck)" "[ -n '$ck' ] && [ -f '$ck' ]"
  "$BIN/sft_run" "${LONG[@]}" --out "$T/k2.ckpt" --resume "$ck" --max-steps $(( $(echo "$ck" | sed 's/.*step\([0-9]*\).ckpt/\1/') + 1 )) 2>"$T/k2.err"
  check "... which resumes (whole, not half written)" "[ $? -eq 0 ]"
else
  fail=$((fail+1)); echo "FAIL: did not find rank 1 of the long run"; tail -5 "$T/k.err"
  kill $tpid 2>/dev/null; wait $tpid
fi

# A rank that someone else signals (kill, a scheduler) says so itself
# (before: rank 0 said "mpirun was interrupted or a rank on another host was lost").
timeout 60 env "$NOLEAK" mpirun --oversubscribe -np 2 "$BIN/sft_run" "${LONG[@]}" --out "$T/i.ckpt" 2>"$T/i.err" &
tpid=$!
victim=$(rank1_of $tpid "$T/i" 0)
if [ -n "$victim" ]; then
  kill -INT "$victim"
  wait $tpid
  rc=$?
  check "a SIGINT to rank 0 alone ends the job non-zero (rc $rc): $(grep 'rank 0 of 2: stopped' "$T/i.err")" \
    "[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'rank 0 of 2: stopped by SIGINT from pid $BASHPID (not from mpirun); .*resume with --resume .*i-step[0-9]*.ckpt' $T/i.err && ! grep -q 'mpirun was interrupted' $T/i.err"
else
  fail=$((fail+1)); echo "FAIL: did not find rank 0 of the interrupted run"; tail -5 "$T/i.err"
  kill $tpid 2>/dev/null; wait $tpid
fi

# A hung rank (stopped, not dead): the collective's timeout aborts the job.
timeout 60 env "$NOLEAK" mpirun --oversubscribe -np 2 "$BIN/sft_run" "${LONG[@]}" --dist-timeout 2 --out "$T/h.ckpt" 2>"$T/h.err" &
tpid=$!
victim=$(rank1_of $tpid "$T/h")
if [ -n "$victim" ]; then
  t0=$(date +%s%N)
  kill -STOP "$victim"
  wait $tpid
  rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  kill -KILL "$victim" 2>/dev/null # a stopped process never acts on mpirun's SIGTERM
  check "a hung rank ends the job non-zero after --dist-timeout (rc $rc, ${ms} ms)" "[ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $ms -lt 15000 ]"
  check "... saying so: $(grep 'waited more than' "$T/h.err")" "grep -q 'a collective waited more than 2 s .*resume with --resume .*h-step[0-9]*.ckpt' $T/h.err"
else
  fail=$((fail+1)); echo "FAIL: did not find rank 1 of the hung run"; tail -5 "$T/h.err"
  kill $tpid 2>/dev/null; wait $tpid
fi

finish
