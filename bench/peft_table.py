#!/usr/bin/env python3
"""The README's PEFT table: for each method, its trainable parameters, peak
memory and DPO step time on SmolLM2-135M-Instruct, and the held-out DPO
accuracy it reaches on align_demo's preference data.

  python3 bench/peft_table.py [--bin build/bin] [--gguf cache/SmolLM2-135M-Instruct.Q4_1.gguf]
                              [--methods full,lora,...] [--steps 6] [--demo-dir bench-out/peft-demo]

Two runs of dpo_run per method, each in its own process:
  SmolLM2   --steps DPO steps (batch 4 pairs of the demo's data, SmolLM2's
            tokenizer and chat template): the "N trainable parameters" line
            dpo_run prints, the peak RSS of the process (os.wait4), and the
            median step_time_s of the steps after the first.
  accuracy  align_demo's DPO stage with the method swapped in: its SFT model
            (from scratch, made by running align_demo once into --demo-dir),
            its 24 training topics, 40 steps, and eval_rewards/accuracies on
            its held-out topics. Each method gets the learning rate its
            usual recipes use (LEARNING_RATES), the rest as the demo.
Prints one JSON object and the Markdown table. Standard library only."""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# method -> dpo_run flags. QLoRA's base is quantised while loading.
METHODS = {
    "full": [],
    "lora": ["--peft", "lora", "--lora-rank", "16"],
    "qlora-nf4": ["--peft", "lora", "--lora-rank", "16", "--quantize-base", "nf4"],
    "dora": ["--peft", "dora", "--lora-rank", "16"],
    "ia3": ["--peft", "ia3"],
    "prompt": ["--peft", "prompt", "--num-virtual-tokens", "20"],
    "prefix": ["--peft", "prefix", "--num-virtual-tokens", "20"],
    "bitfit": ["--peft", "bitfit"],
    "freeze": ["--peft", "freeze", "--trainable-layers", "2"],
}
# The usual learning rates: full fine-tuning as the demo; LoRA-family as
# TRL's/peft's examples; IA3, prompt and prefix tuning train far fewer
# parameters from a neutral start and take 1e-2-scale rates in their papers.
LEARNING_RATES = {"full": 5e-5, "lora": 5e-4, "qlora-nf4": 5e-4, "dora": 5e-4, "ia3": 5e-3, "prompt": 3e-2,
                  "prefix": 1e-2, "bitfit": 1e-3, "freeze": 5e-5}


def short_error(err, rc):
    """The error's last line, or a short name for the known "not applicable" one."""
    line = err.strip().splitlines()[-1] if err.strip() else f"exit {rc}"
    return "n/a: no bias tensors (Llama family)" if "no bias tensors" in line else line


def run_measured(cmd, env):
    """Run cmd; (returncode, stderr text, peak RSS MiB of that process)."""
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        err.seek(0)
        text = err.read().decode(errors="replace")
    return os.waitstatus_to_exitcode(status), text, ru.ru_maxrss / 1024.0


def metric_rows(path):
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.strip()]


def ensure_demo(bin_dir, demo_dir, env):
    if os.path.exists(os.path.join(demo_dir, "sft.ckpt")):
        return
    print(f"running align_demo into {demo_dir} (a few minutes)", file=sys.stderr)
    os.makedirs(demo_dir, exist_ok=True)
    subprocess.run([os.path.join(bin_dir, "align_demo"), "--out-dir", demo_dir], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def smollm2_run(bin_dir, gguf, demo_dir, method, steps, work, env):
    out, metrics = os.path.join(work, f"s-{method}.ckpt"), os.path.join(work, f"s-{method}.jsonl")
    cmd = [os.path.join(bin_dir, "dpo_run"), "--policy", gguf, "--data", os.path.join(demo_dir, "prefs.jsonl"),
           "--out", out, "--metrics", metrics, "--batch-size", "4", "--max-steps", str(steps), "--lr",
           str(LEARNING_RATES[method]), "--beta", "0.1", "--seed", "1", *METHODS[method]]
    rc, err, rss = run_measured(cmd, env)
    if rc != 0:
        return {"error": short_error(err, rc)}
    m = re.search(r"(\d+) trainable parameters", err)
    times = [r["step_time_s"] for r in metric_rows(metrics) if "step_time_s" in r][1:]
    return {"trainable_params": int(m.group(1)) if m else None, "peak_rss_mib": round(rss, 1),
            "step_time_s": round(statistics.median(times), 3) if times else None}


def accuracy_run(bin_dir, demo_dir, method, work, env):
    metrics = os.path.join(work, f"a-{method}.jsonl")
    cmd = [os.path.join(bin_dir, "dpo_run"), "--policy", os.path.join(demo_dir, "sft.ckpt"), "--data",
           os.path.join(demo_dir, "prefs.jsonl"), "--eval-data", os.path.join(demo_dir, "prefs_heldout.jsonl"),
           "--out", os.path.join(work, f"a-{method}.ckpt"), "--loss", "sigmoid", "--beta", "0.1", "--lr",
           str(LEARNING_RATES[method]), "--batch-size", "8", "--max-steps", "40", "--warmup-steps", "5",
           "--lr-schedule", "cosine", "--precompute-ref", "--metrics", metrics, "--seed", "1", *METHODS[method]]
    rc, err, _ = run_measured(cmd, env)
    if rc != 0:
        return {"error": short_error(err, rc)}
    evals = [r["eval_rewards/accuracies"] for r in metric_rows(metrics) if "eval_rewards/accuracies" in r]
    m = re.search(r"(\d+) trainable parameters", err)
    return {"heldout_accuracy": round(evals[-1], 3) if evals else None,
            "demo_trainable_params": int(m.group(1)) if m else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--gguf", default=os.path.join(ROOT, "cache", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--steps", type=int, default=6, help="DPO steps on SmolLM2 (the first is not timed)")
    ap.add_argument("--demo-dir", default=os.path.join(ROOT, "bench-out", "peft-demo"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            sys.exit(f"--methods: unknown method {m} (known: {', '.join(METHODS)})")
    if args.steps < 2:
        sys.exit("--steps: at least 2 (the first step is not timed)")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    ensure_demo(args.bin, args.demo_dir, env)
    rows = {}
    with tempfile.TemporaryDirectory() as work:
        for m in methods:
            print(f"{m}: SmolLM2 ...", file=sys.stderr)
            row = {"flags": " ".join(METHODS[m]), "lr": LEARNING_RATES[m]}
            row.update(smollm2_run(args.bin, args.gguf, args.demo_dir, m, args.steps, work, env))
            print(f"{m}: demo accuracy ...", file=sys.stderr)
            acc = accuracy_run(args.bin, args.demo_dir, m, work, env)
            row.update({k if k != "error" else "demo_error": v for k, v in acc.items()})
            rows[m] = row
    print(json.dumps({"threads": args.threads, "steps": args.steps, "methods": rows}, indent=1))
    print("\n| method | flags | trainable parameters | peak memory MiB | step s | held-out DPO accuracy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for m, r in rows.items():
        tp = f"{r['trainable_params']:,}" if r.get("trainable_params") is not None else r.get("error", "-")
        acc = r.get("heldout_accuracy", r.get("demo_error", "-"))
        print(f"| {m} | `{r['flags'] or '(full fine-tuning)'}` | {tp} | {r.get('peak_rss_mib', '-')} | "
              f"{r.get('step_time_s', '-')} | {acc} |")


if __name__ == "__main__":
    main()
