#!/usr/bin/env python3
"""PPO iteration time of align's ppo_run (broken down by phase, 1 and 2
rollout workers) next to TRL's PPOTrainer (PyTorch, CPU, fp32), in one run,
on the same model, batch, lengths and threads; ratio = align iterations/s
over TRL's.

Model: the real SmolLM2-135M-Instruct (scripts/fetch-smollm2.sh, Q4_1 GGUF),
exported once by `ckpt_convert` to a Hugging Face directory (dequantized
fp32, cache/smollm2-hf): the policy and the reference on both sides.
Reward model and critic (value model): SmolLM2-shaped (30 layers, dim 576,
score head [1, 576]). align: a reward model made by `rm_train` from that
directory with ONE optimizer step on two synthetic pairs (also the critic's
start, ppo_run's default). TRL: AutoModelForSequenceClassification
(num_labels=1) from the same directory, twice (reward model, value model);
the score heads are random. Scores mean nothing on either side; this is a
timing benchmark and only the shapes matter.

Iteration (both sides): 8 fixed short prompts through the model's chat
template (chatml, with its default system line) x 1 sample, at most 16 new
tokens (stop at EOS <|im_end|>), temperature 1, 1 PPO epoch with the whole
batch as one minibatch (one optimizer step of the policy and of the critic
per iteration), GAE (gamma 1, lambda 0.95), k1 KL in the reward (0.05), fp32,
N threads (N = the CPUs this process may use). TRL's defaults that would
make it do different work are changed: num_ppo_epochs 4 -> 1, gradient
checkpointing on -> off, bf16 on -> off, temperature 0.7 -> 1,
num_sample_generations 10 -> 0 (no extra sampling for logs), stop_token
'eos' (TRL otherwise samples all 16 tokens); local_rollout_forward_batch_size
8 (the whole batch in one generate/forward, as align does).

align: ppo_run (orchestrator + policy/critic, reference, reward_server and
rollout-worker processes, OMP_NUM_THREADS=N each) with --batch-size 8 --n 1
--ppo-epochs 1 --advantage gae --max-new-tokens 16; its --metrics give per
iteration time/generate (rollout workers sampling), time/reference,
time/reward, time/values (concurrent; time/score_all is their wall time),
time/update (policy + critic PPO epoch), time/weight_sync (new policy
weights to the rollout workers) and time/iteration. Rows: --rollout-workers
1 and 2 (on a 2-core machine the processes share the cores, so 2 workers can
only help where one leaves cores idle).

TRL: trl.experimental.ppo.PPOTrainer from trl 1.12.0 (trl 1.13 removed PPO;
the pinned trl 1.16 of dpo_vs_trl.py has none), in its own venv
.venv-bench-ppo (bench_setup.PPO_PINS: same torch/transformers as
.venv-bench). It runs in a child process (torch.set_num_threads(N),
OMP_NUM_THREADS=N); a trainer callback stamps the end of every iteration,
and wrappers around the trainer's batch_generation and forward split it
into generate (sampling, with logits), score (log-probs of the samples,
reference forward, value forward, reward forward, GAE: sequential in one
process) and update (the PPO epoch: policy + value forward/backward, one
AdamW step over both, stats); `other` is the rest (gc, empty_cache,
dataloader).

--warmup iterations are not timed on either side, then --steps are. On a
machine shared with other jobs, torch's N-thread OpenMP slows down far more
than align when the cores are oversubscribed; --threads 1 gives the steadier
comparison there (loadavg is recorded before and after each side).
Memory: peak RSS and PSS summed over the process tree (sampled from /proc
every 0.25 s: align is five or more processes that map the same weights
file, PSS counts shared pages once), and wait4's ru_maxrss (the largest
single process).

Prints one JSON object; `align_over_trl` ratios are iterations/s (above 1 =
align faster), `ratio_2_workers_over_1` are times (below 1 = faster).

    python3 bench/ppo_vs_trl.py [--bin build/bin] [--warmup 1] [--steps 3]
                                [--threads N] [--workers 1,2] [--no-trl]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_setup import PPO_PINS, PPO_PROBE, ROOT, ensure_model, ensure_venv, in_venv  # noqa: E402


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
BATCH = len(PROMPTS)
PHASES = ("generate", "reference", "reward", "values", "score_all", "update", "weight_sync", "iteration")


def log(msg):
    print(f"ppo_vs_trl: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup

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


def find_trl_ppo():
    """(PPOConfig, PPOTrainer, trainer module, where) from the installed TRL, or raise with the reason."""
    import importlib
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import trl
    errors = []
    for mod in ("trl.experimental.ppo", "trl"):
        try:
            m = importlib.import_module(mod)
            if getattr(m, "PPOTrainer", None) is not None and getattr(m, "PPOConfig", None) is not None:
                return m.PPOConfig, m.PPOTrainer, sys.modules[m.PPOTrainer.__module__], f"{mod}.PPOTrainer"
        except Exception as e:  # noqa: BLE001 - any import failure means "not usable"
            errors.append(f"{mod}: {type(e).__name__}: {e}")
    raise RuntimeError(f"trl {trl.__version__} has no usable PPOTrainer (trl.experimental.ppo, trl)"
                       + (f": {'; '.join(errors)}" if errors else "")
                       + "; trl 1.13 removed it: use bench_setup.PPO_PINS (trl 1.12.0)")


# ---------------------------------------------------------------- memory of a process tree

def _tree(root):
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            kids.setdefault(int(st[st.rindex(")") + 2:].split()[1]), []).append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def _rss_pss_kb(pid):
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class TreeMemory(threading.Thread):
    """Peak of the RSS and PSS summed over `pid` and its descendants, sampled every `every` s."""

    def __init__(self, pid, every=0.25):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_rss_kb = self.peak_pss_kb = self.peak_procs = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            tot_r = tot_p = 0
            pids = _tree(self.pid)
            for p in pids:
                r, q = _rss_pss_kb(p)
                tot_r, tot_p = tot_r + r, tot_p + q
            self.peak_rss_kb = max(self.peak_rss_kb, tot_r)
            self.peak_pss_kb = max(self.peak_pss_kb, tot_p)
            self.peak_procs = max(self.peak_procs, len(pids))
            self.stop.wait(self.every)


def run_child(cmd, env, log_path):
    """Run cmd to completion: (exit code, rusage, wall s, memory dict)."""
    t = time.perf_counter()
    with open(log_path, "w") as lf:
        p = subprocess.Popen(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT)
        mem = TreeMemory(p.pid)
        mem.start()
        _, status, ru = os.wait4(p.pid, 0)
        mem.stop.set()
        mem.join()
    memory = {"peak_rss_tree_mb": round(mem.peak_rss_kb / 1024, 1),
              "peak_pss_tree_mb": round(mem.peak_pss_kb / 1024, 1),
              "processes": mem.peak_procs,
              # ru_maxrss (KiB on Linux): the largest of the process and its waited-for descendants
              "max_rss_single_process_mb": round(ru.ru_maxrss / 1024, 1)}
    return os.waitstatus_to_exitcode(status), ru, time.perf_counter() - t, memory


# ---------------------------------------------------------------- align

def align_side(args, hf, rm, prompts, workers, env, work):
    metrics = os.path.join(work, f"align_w{workers}.jsonl")
    if os.path.exists(metrics):
        os.unlink(metrics)
    cmd = [os.path.join(args.bin, "ppo_run"), "--policy", hf, "--reward", rm, "--prompts", prompts,
           "--out", os.path.join(work, f"align_w{workers}.ckpt"), "--rollout-workers", str(workers),
           "--batch-size", str(BATCH), "--n", "1", "--max-new-tokens", str(args.max_new_tokens),
           "--temperature", "1", "--ppo-epochs", "1", "--kl-coef", "0.05", "--kl-estimator", "k1",
           "--gamma", "1", "--lam", "0.95",
           "--max-steps", str(args.warmup + args.steps), "--advantage", "gae", "--seed", "42",
           # a loaded machine can take longer than the default 3 missed pings (and 3 s + 5 s for a
           # weight sync): do not take a slow worker for a dead one (only the timeouts change)
           "--dead-after", "60",
           "--metrics", metrics]
    logp = os.path.join(work, f"align_w{workers}.log")
    log(f"align {workers} worker(s): {' '.join(cmd)}")
    rc, ru, wall, memory = run_child(cmd, env, logp)
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
        "memory": memory,
    }
    ph = out["phase_mean_s"]
    if "iteration" in ph:
        out["phase_share_of_iteration"] = {p: round(v / ph["iteration"], 3) for p, v in ph.items()
                                           if p in ("generate", "score_all", "update", "weight_sync")}
    return out


# ---------------------------------------------------------------- TRL (child process)

def trl_child(args):
    """Runs in its own process: TRL's PPOTrainer for warmup + steps iterations; writes a JSON file."""
    import torch
    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                              TrainerCallback)
    import transformers
    import trl
    PPOConfig, PPOTrainer, ptmod, where = find_trl_ppo()

    hf = args.hf
    tok = AutoTokenizer.from_pretrained(hf, padding_side="left")
    # TRL masks every pad id in prompts and responses, so pad must not be <|im_end|> (SmolLM2's
    # pad = eos), which the chat template puts inside every prompt: use <|endoftext|> (id 0).
    if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
        tok.pad_token = "<|endoftext|>" if "<|endoftext|>" in tok.get_vocab() else tok.unk_token
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in PROMPTS]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    ds = Dataset.from_dict({"input_ids": ids})

    def load(cls, **kw):
        m = cls.from_pretrained(hf, dtype=torch.float32, **kw)
        m.config.pad_token_id = tok.pad_token_id
        if getattr(m, "generation_config", None) is not None:
            m.generation_config.pad_token_id = tok.pad_token_id
        return m

    policy = load(AutoModelForCausalLM)
    ref = load(AutoModelForCausalLM)
    reward = load(AutoModelForSequenceClassification, num_labels=1)
    value = load(AutoModelForSequenceClassification, num_labels=1)

    iters = args.warmup + args.steps
    cfg = PPOConfig(
        output_dir=os.path.join(args.work, "trl_out"), report_to=[], save_strategy="no", logging_steps=1,
        disable_tqdm=True, seed=42, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        learning_rate=3e-6, per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
        num_ppo_epochs=1, num_mini_batches=1, local_rollout_forward_batch_size=BATCH,
        total_episodes=BATCH * iters, response_length=args.max_new_tokens, stop_token="eos",
        temperature=1.0, kl_coef=0.05, kl_estimator="k1", gamma=1.0, lam=0.95, missing_eos_penalty=None,
        num_sample_generations=0, dataloader_num_workers=0,
    )

    marks = {"gen": [], "upd": [], "end": [], "resp_len": [], "resp_tokens": []}
    orig_gen, orig_fwd = ptmod.batch_generation, ptmod.forward
    eos = tok.eos_token_id

    def batch_generation(model, queries, *a, **kw):
        t0 = time.perf_counter()
        qr, logits = orig_gen(model, queries, *a, **kw)
        marks["gen"].append((t0, time.perf_counter()))
        resp = qr[:, queries.shape[1]:]
        hit = resp == eos
        lens = torch.where(hit.any(1), hit.int().argmax(1) + 1, torch.full_like(hit[:, 0], resp.shape[1], dtype=torch.long))
        marks["resp_len"].append(lens.float().mean().item())
        marks["resp_tokens"].append(int(resp.shape[1]))
        return qr, logits

    def forward(model, *a, **kw):
        if torch.is_grad_enabled() and len(marks["upd"]) < len(marks["gen"]):
            marks["upd"].append(time.perf_counter())  # the first forward of this iteration's PPO epoch
        return orig_fwd(model, *a, **kw)

    ptmod.batch_generation, ptmod.forward = batch_generation, forward

    class Stamp(TrainerCallback):
        def on_train_begin(self, *a, **kw):
            marks["begin"] = time.perf_counter()

        def on_step_end(self, *a, **kw):
            marks["end"].append(time.perf_counter())

    trainer = PPOTrainer(args=cfg, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                         value_model=value, train_dataset=ds, callbacks=[Stamp()])
    t_train = time.perf_counter()
    trainer.train()
    train_wall = time.perf_counter() - t_train

    n = len(marks["end"])
    if n != iters or len(marks["gen"]) != iters or len(marks["upd"]) != iters:
        raise RuntimeError(f"expected {iters} iterations, saw ends={n} gens={len(marks['gen'])} "
                           f"updates={len(marks['upd'])}")
    starts = [marks["begin"]] + marks["end"][:-1]
    rows = []
    for i in range(iters):
        (g0, g1), u0, e = marks["gen"][i], marks["upd"][i], marks["end"][i]
        rows.append({"iteration": e - starts[i], "generate": g1 - g0, "score": u0 - g1, "update": e - u0,
                     "other": (e - starts[i]) - (e - g0)})
    timed = rows[args.warmup:]
    mean = lambda k: round(sum(r[k] for r in timed) / len(timed), 3)  # noqa: E731
    it = [r["iteration"] for r in timed]
    gen_tokens = [BATCH * marks["resp_len"][i] for i in range(args.warmup, iters)]
    out = {
        "where": where, "trl": trl.__version__, "torch": torch.__version__,
        "transformers": transformers.__version__, "torch_threads": torch.get_num_threads(),
        "timed_iterations": len(timed),
        "s_per_iteration": mean("iteration"),
        "s_per_iteration_min": round(min(it), 3),
        "s_per_iteration_each": [round(x, 3) for x in it],
        "phase_mean_s": {k: mean(k) for k in ("generate", "score", "update", "other", "iteration")},
        "generate_tokens_per_s": round(sum(gen_tokens) / sum(r["generate"] for r in timed), 1),
        "mean_response_length": round(sum(marks["resp_len"][args.warmup:]) / len(timed), 2),
        "padded_response_tokens_each": marks["resp_tokens"][args.warmup:],
        "prompt_tokens": [len(x) for x in ids],
        "train_wall_s": round(train_wall, 1),
        "warmup_s_per_iteration": [round(r["iteration"], 3) for r in rows[:args.warmup]],
    }
    ph = out["phase_mean_s"]
    out["phase_share_of_iteration"] = {k: round(ph[k] / ph["iteration"], 3) for k in ("generate", "score", "update")}
    with open(args.trl_out, "w") as f:
        json.dump(out, f)


def trl_side(args, hf, env, work, script=__file__, say=None):
    """Run `script --trl-child` (this file's, or grpo_vs_trl's) and read its result."""
    say = say or log
    res = os.path.join(work, "trl_result.json")
    if os.path.exists(res):
        os.unlink(res)
    cmd = [sys.executable, os.path.abspath(script), "--trl-child", "--trl-out", res, "--hf", hf, "--work", work,
           "--threads", str(args.threads), "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--max-new-tokens", str(args.max_new_tokens)]
    logp = os.path.join(work, "trl.log")
    say(f"TRL: {' '.join(cmd)}")
    rc, ru, wall, memory = run_child(cmd, env, logp)
    if rc != 0 or not os.path.exists(res):
        tail = open(logp).read()[-1500:]
        return {"available": False, "reason": f"TRL child failed ({rc}); see {logp}: ...{tail}"}
    out = {"available": True, **json.load(open(res))}
    out["process_wall_s"] = round(wall, 1)
    out["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 1)
    out["memory"] = memory
    return out


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--venv", default=os.path.join(ROOT, ".venv-bench-ppo"))
    ap.add_argument("--cache", default=os.path.join(ROOT, "cache"))
    ap.add_argument("--warmup", type=int, default=1, help="iterations not timed (default 1)")
    ap.add_argument("--steps", type=int, default=3, help="timed iterations (default 3)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--workers", default="1,2", help="rollout worker counts, one align row each (default 1,2)")
    ap.add_argument("--no-trl", action="store_true", help="align rows only")
    ap.add_argument("--trl-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--trl-out", help=argparse.SUPPRESS)
    ap.add_argument("--hf", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trl_child:
        return trl_child(args)
    args.bin = os.path.abspath(args.bin)
    workers = [int(w) for w in args.workers.split(",") if w]
    if not in_venv(args.venv):
        ensure_venv(args.venv, __file__, log, pins=PPO_PINS, probe=PPO_PROBE)  # does not return

    os.makedirs(args.cache, exist_ok=True)
    hf = ensure_model(args.bin, args.cache)
    work = os.path.join(args.cache, "ppo_vs_trl")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ)
    n = str(args.threads)
    env.update({"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n,
                "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1", "PYTHONUNBUFFERED": "1",
                "CUDA_VISIBLE_DEVICES": ""})
    rm = ensure_reward_model(args.bin, hf, work, env)
    prompts = os.path.join(work, "prompts.jsonl")
    with open(prompts, "w") as f:
        for p in PROMPTS:
            f.write(json.dumps({"prompt": p}) + "\n")

    import torch
    import transformers
    import trl
    report = {
        "bench": "ppo_vs_trl",
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to fp32, HF dir from ckpt_convert) as policy and "
                 "reference on both sides; SmolLM2-shaped reward model and critic (align: rm_train 1 step; "
                 "TRL: AutoModelForSequenceClassification num_labels=1 from the same dir)",
        "prompts": len(PROMPTS), "samples_per_prompt": 1, "batch": BATCH, "max_new_tokens": args.max_new_tokens,
        "stop": "EOS <|im_end|>", "chat_template": "chatml (model's own)", "temperature": 1.0,
        "ppo_epochs": 1, "minibatch": "whole batch (1 optimizer step per iteration)", "advantage": "gae",
        "dtype": "fp32", "threads": args.threads, "warmup_iterations": args.warmup, "timed_iterations": args.steps,
        "machine": {"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
                    "cpu": platform.processor() or platform.machine(),
                    "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
        "versions": {"torch": torch.__version__, "trl": trl.__version__, "transformers": transformers.__version__},
        "align": {},
    }
    del torch, transformers, trl
    t0 = time.perf_counter()
    for w in workers:
        report["machine"][f"loadavg_before_align_w{w}"] = [round(x, 2) for x in os.getloadavg()]
        try:
            a = align_side(args, hf, rm, prompts, w, env, work)
            log(f"align {w} worker(s): {a['s_per_iteration']} s/iteration {a['phase_mean_s']}")
        except RuntimeError as e:  # keep the other rows
            log(f"align {w} worker(s): {e}")
            a = {"rollout_workers": w, "error": str(e)}
        report["align"][f"workers_{w}"] = a
        report["machine"][f"loadavg_after_align_w{w}"] = [round(x, 2) for x in os.getloadavg()]
    if args.no_trl:
        report["trl"] = {"available": False, "reason": "--no-trl"}
    else:
        report["machine"]["loadavg_before_trl"] = [round(x, 2) for x in os.getloadavg()]
        report["trl"] = trl_side(args, hf, env, work)
        report["machine"]["loadavg_after_trl"] = [round(x, 2) for x in os.getloadavg()]
        if report["trl"].get("available"):
            log(f"TRL: {report['trl']['s_per_iteration']} s/iteration {report['trl']['phase_mean_s']}")
    t = report["trl"]
    if t.get("available"):
        report["align_over_trl"] = {}
        for k, a in report["align"].items():
            if "error" in a:
                continue
            report["align_over_trl"][k] = {
                # iterations/s ratio = TRL s/iteration over align's
                "iterations_per_s": round(t["s_per_iteration"] / a["s_per_iteration"], 3),
                "iterations_per_s_best": round(t["s_per_iteration_min"] / a["s_per_iteration_min"], 3),
                "generate_speed": round(t["phase_mean_s"]["generate"] / a["phase_mean_s"]["generate"], 3)
                if a["phase_mean_s"].get("generate") else None,
                "score_speed": round(t["phase_mean_s"]["score"] / a["phase_mean_s"]["score_all"], 3)
                if a["phase_mean_s"].get("score_all") else None,
                "update_speed": round(t["phase_mean_s"]["update"] / a["phase_mean_s"]["update"], 3)
                if a["phase_mean_s"].get("update") else None,
                "peak_pss_tree": round(a["memory"]["peak_pss_tree_mb"] / t["memory"]["peak_pss_tree_mb"], 3)
                if t["memory"]["peak_pss_tree_mb"] else None,
            }
    a1, a2 = report["align"].get("workers_1", {}), report["align"].get("workers_2", {})
    if "s_per_iteration" in a1 and "s_per_iteration" in a2:
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
