#!/usr/bin/env python3
"""KTO and online DPO step time of align (`kto_run`, `dpo_run --online`)
against TRL's KTOTrainer and OnlineDPOTrainer (PyTorch, CPU, fp32), in one
run, on the same model, data, batch and threads; ratio = align steps/s over
TRL's (above 1 = align faster).

Model: the real SmolLM2-135M-Instruct (scripts/fetch-smollm2.sh, Q4_1 GGUF)
exported once by `ckpt_convert` to cache/smollm2-hf (fp32), which both sides
load (bench_setup.ensure_model, as dpo_vs_trl.py).

Part `kto`: unpaired records made from configs/data/calm_prefs.jsonl, each
pair split into {prompt, completion: chosen, label: true} and {..rejected,
label: false}, alternating (so every batch of TRL's sequential sampler holds
both labels), plain text (no chat template on either side: kto_run
--chat-template none; TRL leaves plain strings as they are). --kto-batch
(8) records per optimizer step, grad accum 1, beta 0.1, desirable and
undesirable weight 1, AdamW lr 5e-7 linear, no warmup, no weight decay,
clip 1.0, --max-length 256 (no truncation: these records are ~20 tokens),
fp32 (TRL bf16 off), TRL gradient checkpointing off (its 1.x default is on,
which recomputes the forward; align never does). Both sides run the KL
estimate's extra forward on mismatched pairs each step, policy and
reference (no precomputed reference: kto_run refuses it).

Part `online`: the prompts of calm_prefs.jsonl, plain text; --online-batch
(4) prompts per step x 2 samples (TRL's fixed num_generations), at most
--max-new-tokens (32) new tokens, temperature 0.9, judged by a SmolLM2-shaped
reward model (align: an rm_train checkpoint, 1 step on 2 synthetic pairs,
ppo_vs_trl.ensure_reward_model; TRL: AutoModelForSequenceClassification
num_labels=1 from the same HF dir: same shape and work, timing only), then a
sigmoid DPO step (beta 0.1) against the reference (the starting model, in
memory on both sides). Sampled lengths differ between the sides (different
RNGs), so tokens generated per step are reported with the times.

Per side, each in its own process: seconds per step after --warmup steps
(mean over --steps and the best step), CPU-seconds per step, peak RSS of the
process (wait4 ru_maxrss). align's step time is `step_time_s` of --metrics
(for online: sampling, judging and the DPO step); TRL's is the wall time
between consecutive on_step_end callbacks.

Runs in the venv of dpo_vs_trl.py (bench_setup.PINS, trl 1.16; made on first
use unless --venv names another). Work files go to cache/kto_vs_trl/.

    python3 bench/kto_vs_trl.py [--bin build/bin] [--venv DIR] [--warmup 1]
        [--steps 3] [--threads N] [--parts kto,online]
"""
import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_setup import ROOT, ensure_model, ensure_venv, in_venv  # noqa: E402
from dpo_vs_trl import hf_tokenizer_dir, run_child, summarize  # noqa: E402

PARTS = ("kto", "online")


def log(msg):
    print(f"kto_vs_trl: {msg}", file=sys.stderr, flush=True)


def make_data(work):
    """KTO records and online prompts from the repository's calm_prefs.jsonl."""
    src = os.path.join(ROOT, "configs", "data", "calm_prefs.jsonl")
    pairs = [json.loads(x) for x in open(src, encoding="utf-8") if x.strip()]
    kto = os.path.join(work, "calm_kto.jsonl")
    prompts = os.path.join(work, "calm_prompts.jsonl")
    with open(kto, "w", encoding="utf-8") as f:
        for p in pairs:
            # a leading space: the completion starts a new word after the prompt on both sides
            f.write(json.dumps({"prompt": p["prompt"], "completion": " " + p["chosen"], "label": True}) + "\n")
            f.write(json.dumps({"prompt": p["prompt"], "completion": " " + p["rejected"], "label": False}) + "\n")
    with open(prompts, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps({"prompt": p["prompt"]}) + "\n")
    return kto, prompts


COMMON = ["--grad-accum", "1", "--max-length", "256", "--chat-template", "none", "--lr", "5e-7",
          "--lr-schedule", "linear", "--warmup-steps", "0", "--weight-decay", "0", "--max-grad-norm", "1",
          "--beta", "0.1", "--seed", "42"]


def align_side(args, part, hf, data, rm, env, work):
    metrics = os.path.join(work, f"align_{part}.jsonl")
    if os.path.exists(metrics):
        os.unlink(metrics)
    steps = str(args.warmup + args.steps)
    if part == "kto":
        cmd = [os.path.join(args.bin, "kto_run"), "--policy", hf, "--data", data, "--batch-size",
               str(args.kto_batch)]
    else:
        cmd = [os.path.join(args.bin, "dpo_run"), "--online", "--policy", hf, "--data", data, "--reward", rm,
               "--batch-size", str(args.online_batch), "--n", "2", "--max-new-tokens", str(args.max_new_tokens),
               "--temperature", "0.9", "--loss", "sigmoid"]
    cmd += COMMON + ["--max-steps", steps, "--out", os.path.join(work, f"align_{part}.ckpt"), "--metrics", metrics]
    logp = os.path.join(work, f"align_{part}.log")
    log(f"align {part}: {' '.join(cmd)}")
    rc, rss, wall, marks = run_child(cmd, env, logp, watch=metrics)
    if rc != 0:
        raise RuntimeError(f"{os.path.basename(cmd[0])} failed ({rc}); see {logp}")
    lines = [json.loads(x) for x in open(metrics) if x.strip()]
    lines = [x for x in lines if "step_time_s" in x]
    st = [x["step_time_s"] for x in lines]
    tk = [x.get("tokens_per_s", 0) * x["step_time_s"] for x in lines]
    out = summarize(st, tk, args.warmup, marks)
    out.update({"peak_rss_mib": round(rss, 1), "process_wall_s": round(wall, 1), "loss_last": lines[-1].get("loss")})
    if part == "online":
        out["val/contain_eos_token"] = [x.get("val/contain_eos_token") for x in lines]
    return out


def trl_side(args, part, hf, tokdir, data, env, work):
    res = os.path.join(work, f"trl_{part}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", part, "--_model", hf, "--_tokenizer", tokdir,
           "--_data", data, "--_result", res, "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--threads", str(args.threads), "--kto-batch", str(args.kto_batch), "--online-batch",
           str(args.online_batch), "--max-new-tokens", str(args.max_new_tokens)]
    logp = os.path.join(work, f"trl_{part}.log")
    log(f"trl {part}")
    rc, rss, wall, _ = run_child(cmd, env, logp)
    if rc != 0:
        raise RuntimeError(f"TRL child failed ({rc}); see {logp}")
    r = json.load(open(res))
    out = summarize(r["step_times"], r["tokens"], args.warmup, r["cpu_marks"])
    out.update({"peak_rss_mib": round(rss, 1), "process_wall_s": round(wall, 1), "loss_last": r.get("loss_last"),
                "gradient_checkpointing": False, "trainer": r["trainer"]})
    if part == "online":
        out["completion_tokens_each_step"] = r.get("completion_tokens")
        out["generate_s_each_step"] = [round(x, 3) for x in r.get("generate_s", [])]
    return out


# ---------------------------------------------------------------- TRL child

def trl_child(args):
    import torch
    torch.set_num_threads(args.threads)
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    step_end, cpu_marks, tokens, completion_tokens, generate_s = [], [], [], [], []

    class Timer(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            step_end.append(time.perf_counter())

        def on_step_end(self, a, state, control, **kw):
            step_end.append(time.perf_counter())
            cpu_marks.append(time.process_time())

    model = AutoModelForCausalLM.from_pretrained(args._model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(args._tokenizer)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ds = load_dataset("json", data_files=args._data, split="train")
    work = os.path.dirname(args._result)
    common = dict(output_dir=os.path.join(work, f"trl_{args._child}_out"), gradient_accumulation_steps=1,
                  max_steps=args.warmup + args.steps, learning_rate=5e-7, lr_scheduler_type="linear", warmup_steps=0,
                  weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", gradient_checkpointing=False, bf16=False,
                  fp16=False, use_cpu=True, logging_steps=1, save_strategy="no", report_to=[], seed=42,
                  dataloader_num_workers=0, disable_tqdm=True)
    if args._child == "kto":
        from trl import KTOConfig, KTOTrainer

        class Counting(KTOTrainer):
            def training_step(self, model, inputs, *a, **k):
                # real tokens of the batch's sequences (the completions and the KL estimate's mismatched ones)
                tokens.append(int(sum(v.sum() for key, v in inputs.items()
                                      if key.endswith("attention_mask") and torch.is_tensor(v))))
                return super().training_step(model, inputs, *a, **k)

        cfg = KTOConfig(per_device_train_batch_size=args.kto_batch, beta=0.1, desirable_weight=1.0,
                        undesirable_weight=1.0, max_length=256, **common)
        trainer = Counting(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
        name = "trl.KTOTrainer"
    else:
        try:
            from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer
        except ImportError:
            from trl import OnlineDPOConfig, OnlineDPOTrainer
        from transformers import AutoModelForSequenceClassification
        reward = AutoModelForSequenceClassification.from_pretrained(args._model, num_labels=1, dtype=torch.float32)
        reward.config.pad_token_id = tok.pad_token_id

        class Counting(OnlineDPOTrainer):
            def _generate(self, *a, **k):
                t = time.perf_counter()
                out = super()._generate(*a, **k)
                generate_s.append(time.perf_counter() - t)
                try:  # (prompt_ids, prompt_mask, completion_ids, completion_mask, ...) in trl 1.16
                    completion_tokens.append(int(out[3].sum()))
                except Exception:  # noqa: BLE001 - a count for the report only
                    pass
                return out

        cfg = OnlineDPOConfig(per_device_train_batch_size=args.online_batch, beta=[0.1], loss_type="sigmoid",
                              max_new_tokens=args.max_new_tokens, temperature=0.9, max_length=256, **common)
        trainer = Counting(model=model, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok,
                           reward_processing_classes=tok, callbacks=[Timer()])
        name = "trl.experimental.online_dpo.OnlineDPOTrainer"
    out = trainer.train()
    st = [b - a for a, b in zip(step_end, step_end[1:])]
    if not tokens:
        tokens = [0] * len(st)
    with open(args._result, "w") as f:
        json.dump({"step_times": st, "cpu_marks": cpu_marks, "tokens": tokens, "completion_tokens": completion_tokens,
                   "generate_s": generate_s,
                   "loss_last": out.training_loss, "trainer": name}, f)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--venv", default=os.path.join(ROOT, ".venv-bench"))
    ap.add_argument("--cache", default=os.path.join(ROOT, "cache"))
    ap.add_argument("--warmup", type=int, default=1, help="steps not timed (default 1)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (default 3)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--kto-batch", type=int, default=8, help="KTO records per step (default 8)")
    ap.add_argument("--online-batch", type=int, default=4, help="online DPO prompts per step (default 4)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--_child")
    ap.add_argument("--_model")
    ap.add_argument("--_tokenizer")
    ap.add_argument("--_data")
    ap.add_argument("--_result")
    args = ap.parse_args()
    if args._child:
        return trl_child(args)
    args.bin = os.path.abspath(args.bin)
    parts = [p for p in args.parts.split(",") if p]
    if any(p not in PARTS for p in parts):
        ap.error(f"--parts: pick from {','.join(PARTS)}")
    if not in_venv(args.venv):
        ensure_venv(args.venv, __file__, log)  # does not return

    os.makedirs(args.cache, exist_ok=True)
    hf = ensure_model(args.bin, args.cache)
    work = os.path.join(args.cache, "kto_vs_trl")
    os.makedirs(work, exist_ok=True)
    tokdir, _ = hf_tokenizer_dir(hf, work)
    kto_data, prompts = make_data(work)

    env = dict(os.environ)
    n = str(args.threads)
    env.update({"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n,
                "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_CACHE": os.path.join(work, "hf_datasets"),
                "PYTHONUNBUFFERED": "1"})
    import torch
    import transformers
    import trl
    online_ok = True
    try:
        from trl.experimental.online_dpo import OnlineDPOTrainer  # noqa: F401
    except ImportError:
        online_ok = hasattr(trl, "OnlineDPOTrainer")
    report = {
        "bench": "kto_vs_trl",
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to fp32, HF dir from ckpt_convert)",
        "data": "configs/data/calm_prefs.jsonl (KTO: each pair split into a desirable and an undesirable record)",
        "threads": args.threads, "warmup_steps": args.warmup, "timed_steps": args.steps, "dtype": "fp32",
        "kto_batch": args.kto_batch, "online_batch_prompts": args.online_batch, "online_samples_per_prompt": 2,
        "max_new_tokens": args.max_new_tokens,
        "machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
        "versions": {"torch": torch.__version__, "trl": trl.__version__, "transformers": transformers.__version__},
        "parts": [],
    }
    del torch, transformers
    t0 = time.perf_counter()
    rm = None
    for part in parts:
        if part == "online" and not online_ok:
            log(f"trl {trl.__version__} has no OnlineDPOTrainer: online part skipped")
            report["parts"].append({"part": part, "skipped": f"trl {trl.__version__} has no OnlineDPOTrainer"})
            continue
        if part == "online" and rm is None:
            from ppo_vs_trl import ensure_reward_model
            rm = ensure_reward_model(args.bin, hf, work, env)
        data = kto_data if part == "kto" else prompts
        a = align_side(args, part, hf, data, rm, env, work)
        log(f"align {part}: {a['s_per_step']} s/step, {a['peak_rss_mib']} MiB")
        t = trl_side(args, part, hf, tokdir, data, env, work)
        log(f"trl {part}: {t['s_per_step']} s/step, {t['peak_rss_mib']} MiB")
        report["parts"].append({
            "part": part, "align": a, "trl": t,
            "ratio_align_over_trl": {
                "steps_per_s": round(a["steps_per_s"] / t["steps_per_s"], 3),
                "steps_per_s_best_step": round(t["s_per_step_min"] / a["s_per_step_min"], 3),
                "cpu_s_per_step_trl_over_align": round(t["cpu_s_per_step"] / a["cpu_s_per_step"], 3)
                if a.get("cpu_s_per_step") and t.get("cpu_s_per_step") else None,
                "peak_rss": round(a["peak_rss_mib"] / t["peak_rss_mib"], 3),
            },
        })
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["total_wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
