#!/usr/bin/env bash
# Ranks started by hand, without mpirun: `--dist-init tcp://HOST:PORT --rank R
# --world-size N` (common/train/dist_rendezvous.h), on the tiny Qwen2 fixture,
# 1 OpenMP thread per rank:
#  - sft_run on 2 ranks gives the losses and weights of 1 process within
#    1e-5 (the check tests/cli/mpi_train.sh makes under mpirun);
#  - dpo_run on 3 ranks started out of order, with ZeRO-1, equals 1 process
#    (the ranks join in rank order whatever order they start in);
#  - a rank SIGKILLed mid-run stops the others within seconds, each with one
#    line naming the lost rank and a whole checkpoint; rank 0's ompi-server
#    goes with the job; a clean run leaves nothing in TMPDIR (OpenMPI's
#    session folders of the singletons, which MPI_Finalize would remove);
#  - ranks given different flags (--lr, --max-steps), or the same --data or
#    --model path holding other contents, are refused before any step with
#    one sentence naming what differs; --out and the like may differ;
#  - a rank that never arrives is named after --dist-timeout; a world size
#    that differs between ranks, a taken port and bad flags are one sentence
#    (ppo_run, which shares the trainer flags, refuses --dist-init).
# Skipped (77) without OpenMPI's ompi-server or when built without MPI.
set -u
BIN=$(cd "$1" && pwd) # absolute: some ranks below run in folders of their own
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../fixtures/hf_tiny_qwen2
PREFS=$HERE/../fixtures/logprobs/prefs.jsonl
command -v ompi-server >/dev/null || { echo "skip: no ompi-server (apt-get install openmpi-bin libopenmpi-dev)"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# the ranks' temporary files (OpenMPI's session folders) go here, so the test can see what is left
mkdir "$T/tmp"
export TMPDIR=$T/tmp
. "$(dirname "$0")/lib/check.sh"
export OMP_NUM_THREADS=1
# shared memory and loopback only: nothing to probe, no warnings about other networks
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
# OpenMPI's own allocations show as leaks at exit under ASan (as in mpi_train.sh)
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
close() { python3 "$(dirname "$0")/lib/ckpt_diff.py" "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ranks NAME N PROG ARGS...: start ranks N-1 .. 0 (the last first) at one
# address, each with stderr in $T/NAME.R.err; sets RCS to their exit statuses.
ranks() {
  local name=$1 n=$2 prog=$3 port pids=() r
  shift 3
  port=$(free_port)
  for r in $(seq $((n - 1)) -1 0); do
    timeout 60 "$BIN/$prog" "$@" --dist-init "tcp://127.0.0.1:$port" --rank "$r" --world-size "$n" 2>"$T/$name.$r.err" &
    pids[r]=$!
  done
  RCS=""
  for r in $(seq 0 $((n - 1))); do wait "${pids[r]}"; RCS="$RCS $?"; done
}

. "$(dirname "$0")/lib/dist_data.sh"
uneven_sft "$T/sft.jsonl"

SFT=(--model "$MODEL" --data "$T/sft.jsonl" --lr 5e-4 --batch-size 4 --grad-accum 2 --max-length 64 --max-steps 4 --dist-timeout 30)
"$BIN/sft_run" "${SFT[@]}" --out "$T/s1.ckpt" --metrics "$T/s1.jsonl" 2>"$T/s1.err"
check "sft_run, 1 process, exits 0" "[ $? -eq 0 ]"
ranks s2 2 sft_run "${SFT[@]}" --out "$T/s2.ckpt" --metrics "$T/s2.jsonl"
if grep -q "has no MPI" "$T/s2.0.err"; then echo "skip: the programs were built without MPI"; exit 77; fi
check "sft_run, 2 ranks by hand, exit 0 (rc$RCS; $(tail -n 1 "$T/s2.0.err"))" "[ '$RCS' = ' 0 0' ]"
check "sft_run: 2 hand-started ranks' losses equal 1 process's ($(close metrics "$T/s1.jsonl" "$T/s2.jsonl"))" "close metrics $T/s1.jsonl $T/s2.jsonl >/dev/null"
check "sft_run: 2 hand-started ranks' weights equal 1 process's ($(close ckpt "$T/s1.ckpt" "$T/s2.ckpt"))" "close ckpt $T/s1.ckpt $T/s2.ckpt >/dev/null"
check "rank 0 says it runs 2 ranks" "grep -q '2 ranks (data parallel)' $T/s2.0.err"
check "the ranks leave nothing in TMPDIR (OpenMPI's session folders: $(cd "$T/tmp" && find . -mindepth 1 | tr '\n' ' '))" "[ -z \"\$(ls -A $T/tmp)\" ]"

DPO=(--policy "$MODEL" --data "$PREFS" --lr 1e-3 --batch-size 4 --max-steps 4 --dist-timeout 30)
"$BIN/dpo_run" "${DPO[@]}" --out "$T/d1.ckpt" --metrics "$T/d1.jsonl" 2>"$T/d1.err"
check "dpo_run, 1 process, exits 0" "[ $? -eq 0 ]"
ranks d3 3 dpo_run "${DPO[@]}" --zero-stage 1 --out "$T/d3.ckpt" --metrics "$T/d3.jsonl"
check "dpo_run, 3 ranks by hand (started last first), ZeRO-1, exit 0 (rc$RCS)" "[ '$RCS' = ' 0 0 0' ]"
check "dpo_run: 3 ranks' losses equal 1 process's ($(close metrics "$T/d1.jsonl" "$T/d3.jsonl"))" "close metrics $T/d1.jsonl $T/d3.jsonl >/dev/null"
check "dpo_run: 3 ranks' weights equal 1 process's ($(close ckpt "$T/d1.ckpt" "$T/d3.ckpt"))" "close ckpt $T/d1.ckpt $T/d3.ckpt >/dev/null"

# A rank killed mid-run (after a checkpoint): the others stop at once.
LONG=(--model "$MODEL" --data "$T/sft.jsonl" --lr 1e-3 --batch-size 4 --max-length 64 --max-steps 1000000 --save-every 3 --dist-timeout 30)
port=$(free_port)
for r in 0 1 2; do
  timeout 60 "$BIN/sft_run" "${LONG[@]}" --out "$T/k.ckpt" --dist-init "tcp://127.0.0.1:$port" --rank $r --world-size 3 2>"$T/k.$r.err" &
  kp[r]=$!
done
for _ in $(seq 100); do ls "$T"/k-step*.ckpt >/dev/null 2>&1 && break; sleep 0.1; done
victim=$(pgrep -P "${kp[1]}")
server=$(pgrep -P "$(pgrep -P "${kp[0]}")" -x ompi-server)
if [ -n "$victim" ]; then
  t0=$(date +%s%N)
  kill -KILL "$victim"
  wait "${kp[0]}"; rc0=$?
  wait "${kp[2]}"; rc2=$?
  wait "${kp[1]}"
  ms=$((($(date +%s%N) - t0) / 1000000))
  check "a SIGKILLed rank 1 ends ranks 0 and 2 non-zero (rc $rc0 $rc2)" "[ $rc0 -eq 1 ] && [ $rc2 -eq 1 ]"
  check "... within seconds (${ms} ms)" "[ $ms -lt 10000 ]"
  for r in 0 2; do
    line=$(grep 'the job was stopped' "$T/k.$r.err")
    check "... rank $r says in one line: $line" "[ \$(grep -c 'the job was stopped' $T/k.$r.err) -eq 1 ] && grep -q 'rank 1 (pid $victim on [^)]*) was lost' $T/k.$r.err"
  done
  ck=$(sed -n 's/.*resume with --resume \([^ ]*\) .*/\1/p' "$T/k.0.err")
  check "... and names a checkpoint that exists ($ck)" "[ -n '$ck' ] && [ -f '$ck' ]"
  sleep 0.5 # gone or a zombie (its parent, rank 0, is gone and init reaps it)
  check "... and rank 0's ompi-server is gone (pid ${server:-none})" "[ -n '$server' ] && ! ps -o stat= -p $server | grep -qv '^Z'"
else
  fail=$((fail+1)); echo "FAIL: did not find rank 1 of the long run"; tail -n 3 "$T"/k.*.err
  kill "${kp[@]}" 2>/dev/null; wait
fi

# A rank started twice, after the job formed: the extra one is told so at
# once and the job goes on (before: it retried until --dist-timeout, then
# said "rank 0 did not answer within 30 s").
port=$(free_port)
TWICE=(--model "$MODEL" --data "$T/sft.jsonl" --batch-size 4 --max-length 64 --max-steps 1000000 --out "$T/tw.ckpt" --dist-timeout 30 --dist-init "tcp://127.0.0.1:$port" --world-size 2)
timeout 60 "$BIN/sft_run" "${TWICE[@]}" --rank 0 2>"$T/tw.0.err" & p0=$!
timeout 60 "$BIN/sft_run" "${TWICE[@]}" --rank 1 2>"$T/tw.1.err" & p1=$!
for _ in $(seq 200); do grep -q '2 ranks (data parallel)' "$T/tw.0.err" && break; sleep 0.05; done
timeout 60 "$BIN/sft_run" "${TWICE[@]}" --rank 1 2>"$T/tw.x.err"; rcx=$?
kill -0 "$(pgrep -P $p0)" "$(pgrep -P $p1)" 2>/dev/null; alive=$?
kill -TERM "$(pgrep -P $p0)" 2>/dev/null
wait $p0; wait $p1
check "--rank 1 started twice: the extra exits 1 at once and says why (rc $rcx: $(tail -n 1 "$T/tw.x.err"))" \
  "[ $rcx -eq 1 ] && grep -q 'already runs with all its 2 ranks; is --rank 1 (pid [0-9]* on [^)]*) started twice' $T/tw.x.err"
check "... and the job it came late to goes on" "[ $alive -eq 0 ]"

# A rank that fails to load (its --data missing on its host): the others
# hear it at once (before: rank 0 waited --dist-timeout for a rank that
# never came, then named it as missing).
port=$(free_port)
FL=(--model "$MODEL" --batch-size 4 --max-length 64 --max-steps 3 --out "$T/fl.ckpt" --dist-timeout 20 --dist-init "tcp://127.0.0.1:$port" --world-size 2)
t0=$(date +%s%N)
timeout 60 "$BIN/sft_run" "${FL[@]}" --data "$T/sft.jsonl" --rank 0 2>"$T/fl.0.err" & p0=$!
timeout 60 "$BIN/sft_run" "${FL[@]}" --data "$T/missing.jsonl" --rank 1 2>"$T/fl.1.err"; rc1=$?
wait $p0; rc0=$?
ms=$((($(date +%s%N) - t0) / 1000000))
check "a rank that cannot load its data: both exit 1 within seconds (rc $rc0 $rc1, ${ms} ms): $(tail -n 1 "$T/fl.0.err")" \
  "[ $rc0 -eq 1 ] && [ $rc1 -eq 1 ] && [ $ms -lt 15000 ] && grep -q 'the job was stopped: rank 1 .*left with exit status 1' $T/fl.0.err && grep -q 'missing.jsonl' $T/fl.1.err"

# A rank that never comes: rank 0 names it after --dist-timeout, and the rank that came hears why.
port=$(free_port)
SHORT=(--model "$MODEL" --data "$T/sft.jsonl" --batch-size 4 --max-length 64 --max-steps 1 --out "$T/m.ckpt" --dist-init "tcp://127.0.0.1:$port" --world-size 3 --dist-timeout 2)
timeout 60 "$BIN/sft_run" "${SHORT[@]}" --rank 0 2>"$T/m.0.err" & p0=$!
timeout 60 "$BIN/sft_run" "${SHORT[@]}" --rank 1 2>"$T/m.1.err"; rc1=$?
wait $p0; rc0=$?
check "a missing rank: both exit 1 (rc $rc0 $rc1): $(tail -n 1 "$T/m.0.err")" "[ $rc0 -eq 1 ] && [ $rc1 -eq 1 ] && grep -q 'rank 2 of 3 did not arrive within 2 s (--dist-timeout)' $T/m.0.err"
check "... and rank 1 hears it from rank 0" "grep -q 'rank 0 refused to start the job: .*rank 2 of 3 did not arrive' $T/m.1.err"

port=$(free_port)
timeout 60 "$BIN/sft_run" "${SHORT[@]}" --rank 0 --world-size 2 2>"$T/w.0.err" & p0=$!
timeout 60 "$BIN/sft_run" "${SHORT[@]}" --rank 1 2>"$T/w.1.err"; rc1=$?
wait $p0; rc0=$?
check "different world sizes: one sentence on both ($(tail -n 1 "$T/w.0.err"))" \
  "[ $rc0 -eq 1 ] && [ $rc1 -eq 1 ] && grep -q 'was started with --world-size 3, rank 0 with 2' $T/w.0.err && grep -q 'was started with --world-size 3, rank 0 with 2' $T/w.1.err"

# Ranks given different jobs: refused before any step, on every rank, with
# one sentence naming what differs (before: another --lr trained silently,
# another --max-steps hung the longer rank until --dist-timeout).
# pair NAME "RANK 0's ARGS" "RANK 1's ARGS" [DIR0 DIR1]: 2 ranks, each in its folder; sets RCS
pair() {
  local port; port=$(free_port)
  (cd "${4:-$T}" && timeout 60 "$BIN/sft_run" $2 --dist-init "tcp://127.0.0.1:$port" --rank 0 --world-size 2 2>"$T/$1.0.err") & local p0=$!
  (cd "${5:-$T}" && timeout 60 "$BIN/sft_run" $3 --dist-init "tcp://127.0.0.1:$port" --rank 1 --world-size 2 2>"$T/$1.1.err"); local rc1=$?
  wait $p0; RCS="$? $rc1"
}
J="--model $MODEL --data $T/sft.jsonl --batch-size 4 --max-length 64 --max-steps 3 --dist-timeout 20 --out $T/j.ckpt"
pair lr "$J --lr 1e-3" "$J --lr 5e-4"
check "another --lr on rank 1: both exit 2 (rc $RCS): $(tail -n 1 "$T/lr.0.err")" \
  "[ '$RCS' = '2 2' ] && grep -q 'rank 1 was started with --lr 0.0005, rank 0 with --lr 0.001; every rank must be given the same' $T/lr.0.err && grep -q 'rank 1 was started with --lr 0.0005' $T/lr.1.err && [ ! -f $T/j.ckpt ]"
check "... each says it once, and nobody reports a lost rank" "[ \$(cat $T/lr.0.err $T/lr.1.err | grep -c 'every rank must') -eq 2 ] && ! grep -q 'was lost\|left with exit status' $T/lr.0.err $T/lr.1.err"
pair steps "$J --max-steps 3" "$J --max-steps 5"
check "another --max-steps: refused at once, not a hang (rc $RCS)" "[ '$RCS' = '2 2' ] && grep -q 'rank 1 was started with --max-steps 5, rank 0 with --max-steps 3' $T/steps.0.err"
pair local "$J --out $T/j0.ckpt --logging-steps 1" "$J --out $T/elsewhere.ckpt --dist-timeout 30"
check "where a rank writes and how long it waits may differ (rc $RCS)" "[ '$RCS' = '0 0' ] && [ -f $T/j0.ckpt ] && [ ! -f $T/elsewhere.ckpt ]"
# the same relative --data and --model naming other files in each rank's folder (other hosts)
mkdir -p "$T/h0" "$T/h1"
cp "$T/sft.jsonl" "$T/h0/sft.jsonl"
sed 's/paris/rome/' "$T/sft.jsonl" >"$T/h1/sft.jsonl"
J="--model $MODEL --data sft.jsonl --batch-size 4 --max-length 64 --max-steps 1 --dist-timeout 20 --out $T/j.ckpt"
pair data "$J" "$J" "$T/h0" "$T/h1"
check "the same --data path holding other records: refused (rc $RCS): $(tail -n 1 "$T/data.0.err")" \
  "[ '$RCS' = '2 2' ] && grep -q \"rank 1's training examples (--data): 20 examples, contents [0-9a-f]*; rank 0's: 20 examples\" $T/data.0.err"
for r in 0 1; do "$BIN/sft_run" --model "$MODEL" --data "$T/sft.jsonl" --max-length 64 --max-steps 1 --lr "1e-$((3 + r))" --out "$T/h$r/m.ckpt" 2>/dev/null; done
J="--model m.ckpt --data $T/sft.jsonl --batch-size 4 --max-length 64 --max-steps 1 --dist-timeout 20 --out $T/j.ckpt"
pair weights "$J" "$J" "$T/h0" "$T/h1"
check "the same --model path holding other weights: refused (rc $RCS): $(tail -n 1 "$T/weights.1.err")" \
  "[ '$RCS' = '2 2' ] && grep -q \"rank 1's starting weights (the model, --resume or --lora-adapter): 25248 values, contents [0-9a-f]*; rank 0's\" $T/weights.1.err"

python3 -c 'import socket, sys, time; s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(30)' >"$T/taken" &
holder=$!
for _ in $(seq 50); do [ -s "$T/taken" ] && break; sleep 0.1; done
taken=$(cat "$T/taken")
"$BIN/sft_run" "${SHORT[@]}" --dist-init "tcp://127.0.0.1:$taken" --rank 0 2>"$T/p.err"; rc=$?
check "a taken port: one sentence (rc $rc: $(tail -n 1 "$T/p.err"))" "[ $rc -eq 1 ] && grep -q 'port $taken is in use on this host' $T/p.err"
kill $holder; wait $holder 2>/dev/null

"$BIN/sft_run" "${SHORT[@]}" --rank 3 2>"$T/f1.err"; rc=$?
check "--rank past --world-size is a usage error (rc $rc: $(tail -n 1 "$T/f1.err"))" "[ $rc -eq 2 ] && grep -q -- '--rank 3: expected 0 to 2' $T/f1.err"
"$BIN/sft_run" "${SHORT[@]}" --rank 0 --dist-init "127.0.0.1:$port" 2>"$T/f2.err"
check "--dist-init without tcp:// is a usage error" "[ $? -eq 2 ] && grep -q 'expected tcp://HOST:PORT' $T/f2.err"
"$BIN/rm_train" --model "$MODEL" --data "$PREFS" --out "$T/r.ckpt" --rank 1 2>"$T/f3.err"
check "--rank without --dist-init is a usage error" "[ $? -eq 2 ] && grep -q -- '--rank and --world-size go with --dist-init' $T/f3.err"
OMPI_COMM_WORLD_SIZE=2 "$BIN/rm_train" --model "$MODEL" --data "$PREFS" --out "$T/r.ckpt" --dist-init "tcp://127.0.0.1:$port" --rank 0 --world-size 2 2>"$T/f4.err"
check "--dist-init under mpirun is refused" "[ $? -eq 2 ] && grep -q 'under mpirun the ranks already meet' $T/f4.err"
"$BIN/ppo_run" --policy "$MODEL" --prompts "$T/sft.jsonl" --reward length --out "$T/p.ckpt" --dist-init "tcp://127.0.0.1:$port" --rank 0 --world-size 2 2>"$T/f5.err"
check "ppo_run refuses --dist-init, naming --policy-ranks and ppo_policy --dist-init with --policy-connect" \
    "[ $? -ne 0 ] && grep -q -- '--policy-ranks N' $T/f5.err && grep -q 'ppo_policy --dist-init .* --policy-connect EP' $T/f5.err"

finish dist_init
