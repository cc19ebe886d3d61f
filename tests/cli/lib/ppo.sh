# Shared by the PPO CLI tests (sourced): the check counter, the tiny
# "Write N:" data sets, and the comparisons resume tests make.
. "$(dirname "${BASH_SOURCE[0]}")/check.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

# ppo_data DIR N_SFT N_PREFS: DIR/sft.jsonl (when N_SFT > 0), DIR/prefs.jsonl
# (chosen answers are mostly "a"s) and DIR/prompts.jsonl (16 prompts).
ppo_data() { python3 - "$@" <<'PY'
import json, random, sys
d, n_sft, n_prefs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(0)
def s(pa, n=8):
    return "".join("a" if random.random() < pa else random.choice("bcd") for _ in range(n))
if n_sft:
    with open(d + "/sft.jsonl", "w") as f:
        for i in range(n_sft):
            f.write(json.dumps({"prompt": "Write %d:" % (i % 16), "completion": s(0.25)}) + "\n")
with open(d + "/prefs.jsonl", "w") as f:
    for i in range(n_prefs):
        f.write(json.dumps({"prompt": "Write %d:" % (i % 16), "chosen": s(0.7), "rejected": s(0.1)}) + "\n")
with open(d + "/prompts.jsonl", "w") as f:
    for i in range(16):
        f.write(json.dumps({"prompt": "Write %d:" % i}) + "\n")
PY
}

# md5 of a .ckpt's tensor data (past its safetensors header)
data() { python3 -c "import struct,sys; b=open(sys.argv[1],'rb').read(); n=struct.unpack('<Q',b[:8])[0]; sys.stdout.buffer.write(b[8+n:])" "$1" | md5sum; }
# metrics without the wall-clock keys, one line per iteration
nontime() { python3 -c "
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(json.dumps({k: v for k, v in r.items() if not k.startswith('time/') and 'per_s' not in k}, sort_keys=True))" "$1"; }

# wait_lines FILE N: until FILE has N lines (30 s at most)
wait_lines() { for _ in $(seq 600); do [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0; sleep 0.05; done; return 1; }
# pid_of WHAT LOG: the pid ppo_run logged for the last start of WHAT
pid_of() { grep "started $1 (pid" "$2" | tail -1 | sed 's/.*(pid \([0-9]*\)).*/\1/'; }
