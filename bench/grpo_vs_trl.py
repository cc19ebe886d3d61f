#!/usr/bin/env python3
"""GRPO iteration time of align's `ppo_run --advantage grpo` (broken down by
phase) next to TRL's GRPOTrainer (PyTorch, CPU, fp32), in one run, on the
same model, prompts, group size, new tokens, reward function and threads;
ratio = align iterations/s over TRL's.

Model: the real SmolLM2-135M-Instruct (scripts/fetch-smollm2.sh, Q4_1 GGUF),
exported once by `ckpt_convert` to a Hugging Face directory (dequantized
fp32, cache/smollm2-hf, bench_setup.ensure_model): the policy on both sides.

Iteration (both sides): 4 fixed arithmetic prompts with labels ("What is
17 + 25? Answer with the number only.", answer "42"), through the model's
chat template, x 4 samples (the group) = 16 completions, at most
--max-new-tokens (32) new tokens, stop at EOS <|im_end|>, temperature 1;
reward = the math verifier (1 when the last number of the completion equals
the label, else 0: align's built-in `math`, a Python function in TRL that
does the same for these plain-number labels); group-normalised advantages
(TRL's scale_rewards "group"), no KL term (TRL's default beta 0), one pass
over the batch as one optimizer step (TRL: per_device_train_batch_size 16,
gradient_accumulation_steps 1, num_iterations 1; align: --batch-size 4 --n 4
--ppo-epochs 1, whole batch as one minibatch), token-mean loss (TRL's
default loss_type "dapo", align's default), AdamW lr 1e-6, fp32, N threads
(N = the CPUs this process may use). TRL's defaults that would make it do
different work are changed: gradient checkpointing and bf16 off. align does
not whiten advantages here (--no-whiten-advantages: TRL does not).

align: ppo_run (orchestrator + policy and rollout-worker processes,
OMP_NUM_THREADS=N each; at --kl-coef 0 no reference process, as TRL loads
no reference model at beta 0; no reward_server: the verifier runs in the
orchestrator); its --metrics give per iteration time/generate (the rollout
worker sampling), time/score_all (the verifier), time/update (the policy's
GRPO step) and time/weight_sync (new weights to the rollout worker).

TRL: trl.GRPOTrainer (bench_setup.PINS, the .venv-bench that dpo_vs_trl.py
uses) in a child process (torch.set_num_threads(N)); wrappers around the
trainer's _generate (sampling), _calculate_rewards (the reward function)
and _generate_and_score_completions split each iteration into generate,
score (rewards, advantages, the rest of the scoring pass) and update (the
loss, backward, AdamW step; the trainer callback stamps its end).

--warmup iterations are not timed on either side, then --steps are. Run it
on an otherwise idle machine: torch's N-thread OpenMP and align's both
collapse when the cores are oversubscribed (loadavg is recorded before and
after each side). Memory as ppo_vs_trl.py: peak RSS/PSS of the process tree.

Prints one JSON object; `align_over_trl` ratios are iterations/s (above 1 =
align faster).

    python3 bench/grpo_vs_trl.py [--bin build/bin] [--warmup 1] [--steps 3]
                                 [--threads N] [--max-new-tokens 32] [--no-trl]
                                 [--batch-invariant]

--batch-invariant runs ppo_run --batch-invariant (the rollout's log-probs
equal the policy's to the bit); the align row then also reports the gap it
saw (rollout_logp_diff_max / _mean over the iterations) either way.
"""
import argparse
import json
import os
import platform
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_setup import PINS, ROOT, ensure_model, ensure_venv, in_venv  # noqa: E402
from ppo_vs_trl import run_child, trl_side  # noqa: E402  (process-tree memory and rusage; the TRL child run)

PROBLEMS = [(17, 25), (38, 46), (123, 77), (9, 64)]
PROMPTS = [(f"What is {a} + {b}? Answer with the number only.", str(a + b)) for a, b in PROBLEMS]
GROUP = 4
PHASES = ("generate", "reference", "reward_rules", "score_all", "update", "weight_sync", "iteration")


def log(msg):
    print(f"grpo_vs_trl: {msg}", file=sys.stderr, flush=True)


def last_number_reward(text, label):
    """The math verifier for plain-number labels: the completion's last number equals the label."""
    nums = re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", ""))
    return 1.0 if nums and float(nums[-1]) == float(label) else 0.0


# ---------------------------------------------------------------- align

def align_side(args, hf, prompts, env, work):
    metrics = os.path.join(work, "align.jsonl")
    if os.path.exists(metrics):
        os.unlink(metrics)
    cmd = [os.path.join(args.bin, "ppo_run"), "--policy", hf, "--prompts", prompts, "--reward", "math",
           "--advantage", "grpo", "--n", str(GROUP), "--batch-size", str(len(PROMPTS)),
           "--max-new-tokens", str(args.max_new_tokens), "--temperature", "1", "--ppo-epochs", "1",
           "--kl-coef", "0", "--scale-rewards", "group", "--no-whiten-advantages", "--lr", "1e-6",
           "--out", os.path.join(work, "align.ckpt"), "--max-steps", str(args.warmup + args.steps),
           "--seed", "42", "--dead-after", "60", "--metrics", metrics]
    if args.batch_invariant:
        cmd.append("--batch-invariant")
    logp = os.path.join(work, "align.log")
    log(f"align: {' '.join(cmd)}")
    rc, ru, wall, memory = run_child(cmd, env, logp)
    if rc != 0:
        raise RuntimeError(f"ppo_run failed ({rc}); see {logp}")
    rows = [json.loads(x) for x in open(metrics) if x.strip()]
    rows = [x for x in rows if "time/iteration" in x]
    timed = rows[args.warmup:]
    if not timed:
        raise RuntimeError(f"no timed iterations in {metrics}")
    mean = lambda k: round(sum(x[k] for x in timed) / len(timed), 3)  # noqa: E731
    it = [x["time/iteration"] for x in timed]
    out = {
        "timed_iterations": len(timed),
        "s_per_iteration": mean("time/iteration"),
        "s_per_iteration_min": round(min(it), 3),
        "s_per_iteration_each": [round(x, 3) for x in it],
        "phase_mean_s": {p: mean(f"time/{p}") for p in PHASES if all(f"time/{p}" in x for x in timed)},
        "mean_completion_length": mean("completions/mean_length"),
        "reward_mean": mean("rewards/math/mean"),
        "batch_invariant": bool(args.batch_invariant),
        "rollout_logp_diff_max": max(x.get("rollout/logp_diff_max", 0) for x in rows),
        "rollout_logp_diff_mean": round(sum(x.get("rollout/logp_diff_mean", 0) for x in rows) / len(rows), 9),
        "process_wall_s": round(wall, 1),
        "cpu_s_all_processes": round(ru.ru_utime + ru.ru_stime, 1),
        "memory": memory,
    }
    ph = out["phase_mean_s"]
    out["phase_share_of_iteration"] = {p: round(v / ph["iteration"], 3) for p, v in ph.items()
                                       if p in ("generate", "score_all", "update", "weight_sync")}
    return out


# ---------------------------------------------------------------- TRL (child process)

def trl_child(args):
    """Runs in its own process: TRL's GRPOTrainer for warmup + steps iterations; writes a JSON file."""
    import torch
    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    import transformers
    import trl
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(args.hf, padding_side="left")
    # SmolLM2's pad = eos = <|im_end|>, which the chat template puts inside every prompt: pad with
    # <|endoftext|> so no prompt token is masked as padding.
    if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
        tok.pad_token = "<|endoftext|>"
    model = AutoModelForCausalLM.from_pretrained(args.hf, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    ds = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p, _ in PROMPTS],
                            "answer": [a for _, a in PROMPTS]})

    lengths = []

    def math_reward(completions, answer, **kw):
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [last_number_reward(t, a) for t, a in zip(texts, answer)]

    iters = args.warmup + args.steps
    cfg = GRPOConfig(
        output_dir=os.path.join(args.work, "trl_out"), report_to=[], save_strategy="no", logging_steps=1,
        disable_tqdm=True, seed=42, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        learning_rate=1e-6, per_device_train_batch_size=len(PROMPTS) * GROUP, gradient_accumulation_steps=1,
        num_generations=GROUP, num_iterations=1, max_completion_length=args.max_new_tokens, temperature=1.0,
        beta=0.0, scale_rewards="group", loss_type="dapo", max_steps=iters, dataloader_num_workers=0,
        log_completions=False,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[math_reward], args=cfg, train_dataset=ds,
                          processing_class=tok)

    marks = {"gen": [], "rew": [], "gs": [], "end": []}

    def wrap(name, key):
        orig = getattr(trainer, name)

        def f(*a, **kw):
            t0 = time.perf_counter()
            r = orig(*a, **kw)
            marks[key].append((t0, time.perf_counter()))
            if key == "gs" and isinstance(r, dict) and "completion_mask" in r:
                lengths.append(r["completion_mask"].sum(1).float().mean().item())
            return r
        setattr(trainer, name, f)

    wrap("_generate", "gen")
    wrap("_calculate_rewards", "rew")
    wrap("_generate_and_score_completions", "gs")

    class Stamp(TrainerCallback):
        def on_train_begin(self, *a, **kw):
            marks["begin"] = time.perf_counter()

        def on_step_end(self, *a, **kw):
            marks["end"].append(time.perf_counter())

    trainer.add_callback(Stamp())
    t_train = time.perf_counter()
    trainer.train()
    train_wall = time.perf_counter() - t_train
    if not (len(marks["end"]) == len(marks["gen"]) == len(marks["gs"]) == iters):
        raise RuntimeError(f"expected {iters} iterations, saw ends={len(marks['end'])} gens={len(marks['gen'])} "
                           f"generate_and_score={len(marks['gs'])}")
    starts = [marks["begin"]] + marks["end"][:-1]
    rows = []
    for i in range(iters):
        (g0, g1), (s0, s1), e = marks["gen"][i], marks["gs"][i], marks["end"][i]
        r = marks["rew"][i][1] - marks["rew"][i][0] if i < len(marks["rew"]) else 0.0
        rows.append({"iteration": e - starts[i], "generate": g1 - g0, "reward": r,
                     "score": (s1 - s0) - (g1 - g0), "update": e - s1})
    timed = rows[args.warmup:]
    mean = lambda k: round(sum(r[k] for r in timed) / len(timed), 3)  # noqa: E731
    it = [r["iteration"] for r in timed]
    out = {
        "trl": trl.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "timed_iterations": len(timed),
        "s_per_iteration": mean("iteration"),
        "s_per_iteration_min": round(min(it), 3),
        "s_per_iteration_each": [round(x, 3) for x in it],
        "phase_mean_s": {k: mean(k) for k in ("generate", "score", "reward", "update", "iteration")},
        "mean_completion_length": round(sum(lengths[args.warmup:]) / max(1, len(lengths[args.warmup:])), 2),
        "train_wall_s": round(train_wall, 1),
        "warmup_s_per_iteration": [round(r["iteration"], 3) for r in rows[:args.warmup]],
    }
    ph = out["phase_mean_s"]
    out["phase_share_of_iteration"] = {k: round(ph[k] / ph["iteration"], 3) for k in ("generate", "score", "update")}
    with open(args.trl_out, "w") as f:
        json.dump(out, f)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--venv", default=os.path.join(ROOT, ".venv-bench"))
    ap.add_argument("--cache", default=os.path.join(ROOT, "cache"))
    ap.add_argument("--warmup", type=int, default=1, help="iterations not timed (default 1)")
    ap.add_argument("--steps", type=int, default=3, help="timed iterations (default 3)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--no-trl", action="store_true", help="the align row only")
    ap.add_argument("--batch-invariant", action="store_true",
                    help="ppo_run --batch-invariant (rollout log-probs equal the policy's; its cost shows in the phases)")
    ap.add_argument("--trl-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--trl-out", help=argparse.SUPPRESS)
    ap.add_argument("--hf", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trl_child:
        return trl_child(args)
    args.bin = os.path.abspath(args.bin)
    if not in_venv(args.venv):
        ensure_venv(args.venv, __file__, log, pins=PINS,
                    probe="import torch, transformers, datasets; from trl import GRPOTrainer")  # does not return

    os.makedirs(args.cache, exist_ok=True)
    hf = ensure_model(args.bin, args.cache)
    work = os.path.join(args.cache, "grpo_vs_trl")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ)
    n = str(args.threads)
    env.update({"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n,
                "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""})
    prompts = os.path.join(work, "prompts.jsonl")
    with open(prompts, "w") as f:
        for p, a in PROMPTS:
            f.write(json.dumps({"prompt": p, "answer": a}) + "\n")

    import torch
    import transformers
    import trl
    report = {
        "bench": "grpo_vs_trl",
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to fp32, HF dir from ckpt_convert), both sides",
        "prompts": len(PROMPTS), "group_size": GROUP, "completions_per_iteration": len(PROMPTS) * GROUP,
        "max_new_tokens": args.max_new_tokens, "stop": "EOS <|im_end|>", "chat_template": "chatml (model's own)",
        "temperature": 1.0, "reward": "math verifier (last number == label)", "beta": 0.0,
        "loss": "token-mean (TRL dapo)", "optimizer_steps_per_iteration": 1, "dtype": "fp32",
        "threads": args.threads, "warmup_iterations": args.warmup, "timed_iterations": args.steps,
        "machine": {"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
                    "cpu": platform.processor() or platform.machine(),
                    "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
        "versions": {"torch": torch.__version__, "trl": trl.__version__, "transformers": transformers.__version__},
    }
    del torch, transformers, trl
    t0 = time.perf_counter()
    report["machine"]["loadavg_before_align"] = [round(x, 2) for x in os.getloadavg()]
    try:
        report["align"] = align_side(args, hf, prompts, env, work)
        log(f"align: {report['align']['s_per_iteration']} s/iteration {report['align']['phase_mean_s']}")
    except RuntimeError as e:
        log(f"align: {e}")
        report["align"] = {"error": str(e)}
    report["machine"]["loadavg_after_align"] = [round(x, 2) for x in os.getloadavg()]
    if args.no_trl:
        report["trl"] = {"available": False, "reason": "--no-trl"}
    else:
        report["machine"]["loadavg_before_trl"] = [round(x, 2) for x in os.getloadavg()]
        report["trl"] = trl_side(args, hf, env, work, script=__file__, say=log)
        report["machine"]["loadavg_after_trl"] = [round(x, 2) for x in os.getloadavg()]
        if report["trl"].get("available"):
            log(f"TRL: {report['trl']['s_per_iteration']} s/iteration {report['trl']['phase_mean_s']}")
    t, a = report["trl"], report["align"]
    if t.get("available") and "error" not in a:
        ap_, tp = a["phase_mean_s"], t["phase_mean_s"]
        report["align_over_trl"] = {
            # iterations/s ratio = TRL s/iteration over align's
            "iterations_per_s": round(t["s_per_iteration"] / a["s_per_iteration"], 3),
            "iterations_per_s_best": round(t["s_per_iteration_min"] / a["s_per_iteration_min"], 3),
            "generate_speed": round(tp["generate"] / ap_["generate"], 3) if ap_.get("generate") else None,
            "score_speed": round(tp["score"] / ap_["score_all"], 3) if ap_.get("score_all") else None,
            "update_speed": round(tp["update"] / ap_["update"], 3) if ap_.get("update") else None,
            "peak_pss_tree": round(a["memory"]["peak_pss_tree_mb"] / t["memory"]["peak_pss_tree_mb"], 3)
            if t["memory"]["peak_pss_tree_mb"] else None,
        }
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["total_wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
