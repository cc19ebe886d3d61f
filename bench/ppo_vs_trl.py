#!/usr/bin/env python3
"""PPO iteration time of align's ppo_run, broken down by phase, with 1 and 2
rollout workers, next to TRL's PPO trainer (PyTorch, CPU) when the installed
TRL still ships one, in one run, on the same model, batch and threads.

Model: the real SmolLM2-135M-Instruct (scripts/fetch-smollm2.sh, Q4_1 GGUF),
exported once by `ckpt_convert` to a Hugging Face directory (dequantized
fp32): the policy and the reference. Reward model (and the critic's start,
ppo_run's default): a SmolLM2-shaped reward model made by `rm_train` from
that directory with ONE optimizer step on two synthetic preference pairs.
Its scores mean nothing; this is a timing benchmark, and only its shape
(30 layers, dim 576, score head [1, 576]) matters.

Iteration: 8 fixed short prompts x 1 sample (--batch-size 8 --n 1), 16 new
tokens at most, 1 PPO epoch with the whole batch as one minibatch (one
optimizer step of the policy and of the critic per iteration), GAE, fp32,
N threads (OMP_NUM_THREADS=N for every process ppo_run starts; N = the
CPUs this process may use). --warmup iterations are not timed, then --steps
are. ppo_run reports per iteration (its --metrics): time/generate (rollout
workers sampling), time/reference, time/reward, time/values (these three
run concurrently; time/score_all is their wall time), time/update (policy +
critic PPO epoch) and time/weight_sync (new policy weights to the rollout
workers), and time/iteration (all of it). Rows: --rollout-workers 1 and 2.
On a 2-core machine the processes share the cores, so 2 workers can only
help where one leaves cores idle.

TRL: trl 1.x removed PPOTrainer from the top level; this looks for it under
trl and trl.experimental and, when it is absent, says so in the output
("trl": {"available": false, "reason": ...}) and reports align alone.

Prints one JSON object; ratios are 2 workers / 1 worker (below 1 = faster).

    python3 bench/ppo_vs_trl.py [--bin build/bin] [--warmup 1] [--steps 3]
                                [--threads N] [--workers 1,2]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_setup import PINS, ROOT, ensure_model, ensure_venv, in_venv  # noqa: E402


PROMPTS = [
    "Write a short poem about the sea.",
    "What is the capital of France?",
    "Explain gravity simply.",
    "Give me a tip for sleeping well.",
    "Name three fruits.",
    "How do birds fly?",
    "Describe a sunny morning.",
    "Why is the sky blue?",
]
PHASES = ("generate", "reference", "reward", "values", "score_all", "update", "weight_sync", "iteration")


def log(msg):
    print(f"ppo_vs_trl: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup (bench_setup.py)


def ensure_reward_model(bin_dir, hf, work, env):
    """A SmolLM2-shaped reward model: rm_train, 1 step on 2 synthetic pairs."""
    rm = os.path.join(work, "rm_smollm2_1step.ckpt")
    if os.path.exists(rm):
        return rm
    prefs = os.path.join(work, "rm_prefs.jsonl")
    with open(prefs, "w") as f:
        f.write(json.dumps({"prompt": "Say something kind.", "chosen": " You are doing great work.",
                            "rejected": " No."}) + "\n")
        f.write(json.dumps({"prompt": "Name a color.", "chosen": " Blue, like the sky.",
                            "rejected": " I will not."}) + "\n")
    cmd = [os.path.join(bin_dir, "rm_train"), prefs, "--model", hf, "--out", rm, "--max-steps", "1",
           "--batch-size", "2", "--seed", "42"]
    log(f"reward model: {' '.join(cmd)}")
    with open(os.path.join(work, "rm_train.log"), "w") as lf:
        subprocess.run(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT, check=True)
    return rm


def trl_ppo_probe():
    """(available, where, reason) for a PPO trainer in the installed TRL."""
    import importlib
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import trl
    for mod, name in (("trl", "PPOTrainer"), ("trl.experimental.ppo", "PPOTrainer"),
                      ("trl.experimental", "PPOTrainer")):
        try:
            m = importlib.import_module(mod)
            if getattr(m, name, None) is not None:
                return True, f"{mod}.{name}", None
        except Exception:  # noqa: BLE001 - any import failure means "not there"
            pass
    exp = os.path.join(os.path.dirname(trl.__file__), "experimental")
    subs = sorted(d for d in os.listdir(exp) if os.path.isdir(os.path.join(exp, d)) and not d.startswith("_")) \
        if os.path.isdir(exp) else []
    online = [n for n in ("GRPOTrainer", "RLOOTrainer") if hasattr(trl, n)]
    return False, None, (f"trl {trl.__version__} ships no PPO trainer: no trl.PPOTrainer and no PPO module under "
                         f"trl.experimental ({', '.join(subs)}); its online RL trainers are {', '.join(online)} "
                         "(no critic/GAE), which are not PPO, so there is nothing equivalent to time")


# ---------------------------------------------------------------- align

def run_child(cmd, env, log_path):
    t = time.perf_counter()
    with open(log_path, "w") as lf:
        p = subprocess.Popen(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
    return os.waitstatus_to_exitcode(status), ru, time.perf_counter() - t


def align_side(args, hf, rm, prompts, workers, env, work):
    metrics = os.path.join(work, f"align_w{workers}.jsonl")
    if os.path.exists(metrics):
        os.unlink(metrics)
    cmd = [os.path.join(args.bin, "ppo_run"), "--policy", hf, "--reward", rm, "--prompts", prompts,
           "--out", os.path.join(work, f"align_w{workers}.ckpt"), "--rollout-workers", str(workers),
           "--batch-size", "8", "--n", "1", "--max-new-tokens", str(args.max_new_tokens), "--ppo-epochs", "1",
           "--max-steps", str(args.warmup + args.steps), "--advantage", "gae", "--seed", "42",
           "--metrics", metrics]
    logp = os.path.join(work, f"align_w{workers}.log")
    log(f"align {workers} worker(s): {' '.join(cmd)}")
    rc, ru, wall = run_child(cmd, env, logp)
    if rc != 0:
        raise RuntimeError(f"ppo_run failed ({rc}); see {logp}")
    lines = [json.loads(x) for x in open(metrics) if x.strip()]
    lines = [x for x in lines if "time/iteration" in x]
    timed = lines[args.warmup:]
    if not timed:
        raise RuntimeError(f"no timed iterations in {metrics}")
    mean = lambda k: round(sum(x[k] for x in timed) / len(timed), 3)  # noqa: E731
    it = [x["time/iteration"] for x in timed]
    out = {
        "rollout_workers": workers,
        "timed_iterations": len(timed),
        "s_per_iteration": mean("time/iteration"),
        "s_per_iteration_min": round(min(it), 3),
        "s_per_iteration_each": [round(x, 3) for x in it],
        "phase_mean_s": {p: mean(f"time/{p}") for p in PHASES if all(f"time/{p}" in x for x in timed)},
        # ppo_run's tokens_per_s: completion tokens sampled / time/generate
        "generate_tokens_per_s": mean("tokens_per_s") if all("tokens_per_s" in x for x in timed) else None,
        "mean_response_length": mean("val/mean_response_length")
        if all("val/mean_response_length" in x for x in timed) else None,
        "process_wall_s": round(wall, 1),
        # ppo_run waits for the processes it starts, so these cover them too
        "cpu_s_all_processes": round(ru.ru_utime + ru.ru_stime, 1),
    }
    ph = out["phase_mean_s"]
    if "iteration" in ph:
        out["phase_share_of_iteration"] = {p: round(v / ph["iteration"], 3) for p, v in ph.items()
                                           if p in ("generate", "score_all", "update", "weight_sync")}
    return out


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--venv", default=os.path.join(ROOT, ".venv-bench"))
    ap.add_argument("--cache", default=os.path.join(ROOT, "cache"))
    ap.add_argument("--warmup", type=int, default=1, help="iterations not timed (default 1)")
    ap.add_argument("--steps", type=int, default=3, help="timed iterations (default 3)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--workers", default="1,2", help="rollout worker counts, one row each (default 1,2)")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    workers = [int(w) for w in args.workers.split(",") if w]
    if not in_venv(args.venv):
        ensure_venv(args.venv, __file__, log)  # does not return

    os.makedirs(args.cache, exist_ok=True)
    hf = ensure_model(args.bin, args.cache)
    work = os.path.join(args.cache, "ppo_vs_trl")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ)
    n = str(args.threads)
    env.update({"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n,
                "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1"})
    rm = ensure_reward_model(args.bin, hf, work, env)
    prompts = os.path.join(work, "prompts.jsonl")
    with open(prompts, "w") as f:
        for p in PROMPTS:
            f.write(json.dumps({"prompt": p}) + "\n")

    import torch
    import transformers
    import trl
    available, where, reason = trl_ppo_probe()
    report = {
        "bench": "ppo_vs_trl",
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to fp32, HF dir from ckpt_convert) as policy and "
                 "reference; SmolLM2-shaped reward model (rm_train, 1 step) as reward and critic start",
        "prompts": len(PROMPTS), "samples_per_prompt": 1, "batch": 8, "max_new_tokens": args.max_new_tokens,
        "ppo_epochs": 1, "minibatch": "whole batch", "advantage": "gae", "dtype": "fp32",
        "threads": args.threads, "warmup_iterations": args.warmup, "timed_iterations": args.steps,
        "machine": {"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
                    "cpu": platform.processor() or platform.machine(),
                    "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
        "versions": {"torch": torch.__version__, "trl": trl.__version__, "transformers": transformers.__version__},
        "align": {},
    }
    del torch, transformers, trl
    t0 = time.perf_counter()
    for w in workers:
        a = align_side(args, hf, rm, prompts, w, env, work)
        log(f"align {w} worker(s): {a['s_per_iteration']} s/iteration {a['phase_mean_s']}")
        report["align"][f"workers_{w}"] = a
    if available:
        # A TRL that ships PPO again: not wired up here (trl 1.16, the pinned version, has none).
        report["trl"] = {"available": True, "where": where, "timed": False,
                         "reason": "a PPO trainer exists in this TRL but this script has no runner for it yet"}
    else:
        report["trl"] = {"available": False, "reason": reason}
    if "workers_1" in report["align"] and "workers_2" in report["align"]:
        a1, a2 = report["align"]["workers_1"], report["align"]["workers_2"]
        report["ratio_2_workers_over_1"] = {
            "s_per_iteration": round(a2["s_per_iteration"] / a1["s_per_iteration"], 3),
            **{f"{p}_s": round(a2["phase_mean_s"][p] / a1["phase_mean_s"][p], 3)
               for p in ("generate", "score_all", "update", "weight_sync")
               if a1["phase_mean_s"].get(p) and a2["phase_mean_s"].get(p)},
        }
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["total_wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
