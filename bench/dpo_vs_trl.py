#!/usr/bin/env python3
"""DPO training speed and memory of align's dpo_run against TRL's DPOTrainer
(PyTorch, CPU), in one run, on the same model, data, batch and threads.

Model: the real SmolLM2-135M-Instruct (scripts/fetch-smollm2.sh, Q4_1 GGUF),
exported once by `ckpt_convert` to a Hugging Face directory (dequantized
fp32) that BOTH sides load: dpo_run --policy DIR, and transformers'
AutoModelForCausalLM.from_pretrained(DIR, dtype=float32).

Data: a synthetic TRL-format preference file ({prompt, chosen, rejected} as
plain strings, no chat template on either side), made deterministically
from a fixed word list with the model's own tokenizer.json: every prompt is
exactly --prompt-tokens tokens and every completion --completion-tokens
tokens plus the EOS both sides append, so each sequence is 128 + 128 = 256
tokens = --max-length (no truncation on either side, and no padding for
TRL: its best case; align packs, so padding would only cost TRL).

Step: 4 pairs per optimizer step (TRL per_device_train_batch_size=4,
gradient_accumulation_steps=1; dpo_run --batch-size 4 --grad-accum 1),
sigmoid loss, beta 0.1, AdamW (torch's adamw_torch / align's), lr 5e-7
linear schedule, no warmup, no weight decay, grad clip 1.0, fp32 on both
sides (TRL: bf16=False), gradient checkpointing OFF on TRL (its 1.x default
is on: that recomputes the forward, which align never does; see
--trl-grad-ckpt), N threads on both sides (torch.set_num_threads(N) and
OMP_NUM_THREADS=N; N = the CPUs this process may use).

Two rows:
  ref_each_step   reference model in memory, its forward every step (TRL's
                  default; dpo_run's default)
  precompute_ref  reference log-probs computed once before training, on
                  both sides (TRL precompute_ref_log_probs=True, dpo_run
                  --precompute-ref); that pass is not in the step time.

Measured per side, each in its own process: steady-state seconds per step
(--warmup steps skipped, then --steps timed), tokens/s (real, unpadded
prompt+completion tokens of the 2x4 sequences through the policy per step /
seconds per step; TRL's padded count is shown too), and peak RSS of the
process (ru_maxrss from wait4, i.e. VmHWM). align's step time is
`step_time_s` from dpo_run --metrics (micro-batches + optimizer step); TRL's
is the wall time between consecutive on_step_end callbacks (data collation,
forward, backward, optimizer step, its logging).

Prints one JSON object; ratios are align / TRL (steps/s above 1 = align
faster; peak RSS below 1 = align smaller).

Setup: PyTorch and TRL live in a venv (default .venv-bench in the repo, made
and filled here if missing: `pip install torch trl transformers` pinned
below; PyPI's torch wheel pulls the CUDA libraries too, several GB, unused
here). Never needed by the tests.

    python3 bench/dpo_vs_trl.py [--bin build/bin] [--warmup 1] [--steps 2]
                                [--threads N] [--rows ref_each_step,precompute_ref]
"""
import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_setup import PINS, ROOT, ensure_model, ensure_venv, in_venv  # noqa: E402

ROWS = ("ref_each_step", "precompute_ref")

WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her she there been one all we their has would when if so no what up out who them some could more into "
    "time only new other about then like than any these two may first well way even because also after many before "
    "must through back where most much good people should very just those over such great little own world still "
    "water house river mountain garden window morning evening summer winter market village teacher student letter "
    "question answer reason number simple careful quiet bright heavy gentle sudden narrow distant ancient modern "
    "travel follow carry listen remember explain measure gather prepare return wonder divide notice promise "
    "however although therefore perhaps usually together already finally almost"
).split()


def log(msg):
    print(f"dpo_vs_trl: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup (bench_setup.py)


def hf_tokenizer_dir(hf, work):
    """The tokenizer for the TRL side, with the same ids align uses.

    A tokenizer.json whose special tokens appear only in "added_tokens" and
    not in model.vocab (as ckpt_convert's GGUF -> HF export writes it) is read
    by Hugging Face `tokenizers` with those tokens RENUMBERED after the vocab
    (<|im_end|> becomes 49137 instead of 2, colliding with a real token),
    while align honours their ids. A copy with them put into model.vocab at
    their own ids gives both sides the same token ids; a tokenizer.json that
    already has them is copied unchanged."""
    j = json.load(open(os.path.join(hf, "tokenizer.json"), encoding="utf-8"))
    vocab = j["model"]["vocab"]
    missing = {t["content"]: t["id"] for t in j.get("added_tokens", []) if t["content"] not in vocab}
    vocab.update(missing)
    out = os.path.join(work, "hf_tokenizer")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if os.path.exists(os.path.join(hf, name)):
            with open(os.path.join(hf, name), "rb") as a, open(os.path.join(out, name), "wb") as b:
                b.write(a.read())
    return out, len(missing)


def make_data(hf, path, n_pairs, prompt_tokens, completion_tokens, seed=1234):
    """Deterministic records whose token counts are exact under the model's
    tokenizer (prompt alone; completion alone, before the EOS both add)."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(hf, "tokenizer.json"))
    count = lambda s: len(tok.encode(s, add_special_tokens=False).ids)  # noqa: E731
    rng = random.Random(seed)

    def text(n, lead):
        words = []
        while True:
            for _ in range(200):
                w = rng.choice(WORDS)
                cand = (lead + " ".join(words + [w]))
                k = count(cand)
                if k <= n:
                    words.append(w)
                    break
            else:
                raise RuntimeError("cannot fill text to an exact token count")
            if k == n:
                return cand

    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n_pairs):
            p = text(prompt_tokens, "")
            c = text(completion_tokens, " ")
            r = text(completion_tokens, " ")
            # the completion must start on a token boundary after the prompt (TRL tokenizes prompt+completion)
            assert count(p + c) == prompt_tokens + completion_tokens and count(p + r) == prompt_tokens + completion_tokens
            f.write(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n")


def proc_cpu_s(pid):
    """user + system CPU seconds of a live process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(cmd, env, log_path, watch=None):
    """Run cmd; return (exit status, peak RSS in MiB, wall seconds, CPU
    seconds of the process sampled each time the file `watch` gains a line)."""
    t = time.perf_counter()
    cpu_marks, seen = [], 0
    with open(log_path, "w") as lf:
        p = subprocess.Popen(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT)
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if watch and os.path.exists(watch):
                with open(watch) as f:
                    n = sum(1 for x in f if x.endswith("\n"))
                if n > seen:
                    try:
                        cpu_marks.append(proc_cpu_s(p.pid))
                    except OSError:
                        pass
                    seen = n
            time.sleep(0.05)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, ru.ru_maxrss / 1024.0, time.perf_counter() - t, cpu_marks


def summarize(step_times, tokens, warmup, cpu_marks=None):
    st = step_times[warmup:]
    tk = tokens[warmup:]
    if not st:
        raise RuntimeError("no timed steps")
    mean = sum(st) / len(st)
    return {
        "timed_steps": len(st),
        "s_per_step": round(mean, 3),
        "s_per_step_min": round(min(st), 3),
        "s_per_step_each": [round(x, 3) for x in st],
        "steps_per_s": round(1.0 / mean, 5),
        "tokens_per_step": round(sum(tk) / len(tk), 1),
        "tokens_per_s": round(sum(tk) / sum(st), 2),
        **cpu_summary(cpu_marks, warmup, len(st)),
    }


def cpu_summary(marks, warmup, timed):
    """CPU seconds per timed step from CPU-time marks taken at step ends
    (marks[i] = after step i+1): less sensitive than wall time to other
    processes taking the cores, as long as waiting threads sleep."""
    if not marks or len(marks) < warmup + timed:
        return {}
    d = [b - a for a, b in zip(marks[warmup - 1:], marks[warmup:])] if warmup > 0 else []
    if len(d) < timed:
        return {}
    return {"cpu_s_per_step": round(sum(d[:timed]) / timed, 2)}


def align_side(args, hf, data, row, env, work):
    metrics = os.path.join(work, f"align_{row}.jsonl")
    if os.path.exists(metrics):
        os.unlink(metrics)
    cmd = [os.path.join(args.bin, "dpo_run"), "--policy", hf, "--data", data, "--out",
           os.path.join(work, f"align_{row}.ckpt"), "--batch-size", "4", "--grad-accum", "1",
           "--max-steps", str(args.warmup + args.steps), "--max-length", str(args.max_length),
           "--chat-template", "none", "--lr", "5e-7", "--lr-schedule", "linear", "--warmup-steps", "0",
           "--weight-decay", "0", "--max-grad-norm", "1", "--beta", "0.1", "--loss", "sigmoid",
           "--seed", "42", "--metrics", metrics]
    if row == "precompute_ref":
        cmd.append("--precompute-ref")
    logp = os.path.join(work, f"align_{row}.log")
    log(f"align {row}: {' '.join(cmd)}")
    rc, rss, wall, marks = run_child(cmd, env, logp, watch=metrics)
    if rc != 0:
        raise RuntimeError(f"dpo_run failed ({rc}); see {logp}")
    lines = [json.loads(x) for x in open(metrics) if x.strip()]
    lines = [x for x in lines if "step_time_s" in x]
    st = [x["step_time_s"] for x in lines]
    tk = [x["tokens_per_s"] * x["step_time_s"] for x in lines]
    out = summarize(st, tk, args.warmup, marks)
    out.update({"peak_rss_mib": round(rss, 1), "process_wall_s": round(wall, 1),
                "loss_last": lines[-1].get("loss")})
    return out


def trl_side(args, hf, tokdir, data, row, env, work):
    res = os.path.join(work, f"trl_{row}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", row, "--_model", hf, "--_tokenizer", tokdir,
           "--_data", data,
           "--_result", res, "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--threads", str(args.threads), "--max-length", str(args.max_length)]
    if args.trl_grad_ckpt:
        cmd.append("--trl-grad-ckpt")
    logp = os.path.join(work, f"trl_{row}.log")
    log(f"trl {row}")
    rc, rss, wall, _ = run_child(cmd, env, logp)
    if rc != 0:
        raise RuntimeError(f"TRL child failed ({rc}); see {logp}")
    r = json.load(open(res))
    out = summarize(r["step_times"], r["tokens"], args.warmup, r["cpu_marks"])
    out.update({"padded_tokens_per_step": round(sum(r["padded"][args.warmup:]) / args.steps, 1),
                "peak_rss_mib": round(rss, 1), "process_wall_s": round(wall, 1), "loss_last": r.get("loss_last"),
                "gradient_checkpointing": args.trl_grad_ckpt})
    return out


# ---------------------------------------------------------------- TRL child

def trl_child(args):
    import torch
    torch.set_num_threads(args.threads)
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    step_end, cpu_marks, tokens, padded = [], [], [], []

    class Timer(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            step_end.append(time.perf_counter())  # after any precompute pass (that runs before train begins)

        def on_step_end(self, a, state, control, **kw):
            step_end.append(time.perf_counter())
            cpu_marks.append(time.process_time())  # this process, all threads

    class Counting(DPOTrainer):
        def training_step(self, model, inputs, *a, **k):
            tokens.append(int(inputs["attention_mask"].sum()))
            padded.append(int(inputs["input_ids"].numel()))
            return super().training_step(model, inputs, *a, **k)

    model = AutoModelForCausalLM.from_pretrained(args._model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(args._tokenizer)
    assert tok.eos_token_id == model.config.eos_token_id, (tok.eos_token, tok.eos_token_id, model.config.eos_token_id)
    ds = load_dataset("json", data_files=args._data, split="train")
    work = os.path.dirname(args._result)
    cfg = DPOConfig(
        output_dir=os.path.join(work, "trl_out"), per_device_train_batch_size=4, gradient_accumulation_steps=1,
        max_steps=args.warmup + args.steps, learning_rate=5e-7, lr_scheduler_type="linear", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", beta=0.1, loss_type=["sigmoid"],
        max_length=args.max_length, precompute_ref_log_probs=(args._child == "precompute_ref"),
        gradient_checkpointing=args.trl_grad_ckpt, bf16=False, fp16=False, use_cpu=True, logging_steps=1,
        save_strategy="no", report_to=[], seed=42, dataloader_num_workers=0, disable_tqdm=True)
    trainer = Counting(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
    out = trainer.train()
    # with precompute_ref TRL's reference pass runs in DPOTrainer.__init__, before on_train_begin
    st = [b - a for a, b in zip(step_end, step_end[1:])]
    with open(args._result, "w") as f:
        json.dump({"step_times": st, "cpu_marks": cpu_marks, "tokens": tokens, "padded": padded, "loss_last": out.training_loss,
                   "versions": {"torch": torch.__version__, "trl": __import__("trl").__version__,
                                "transformers": __import__("transformers").__version__}}, f)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--venv", default=os.path.join(ROOT, ".venv-bench"))
    ap.add_argument("--cache", default=os.path.join(ROOT, "cache"))
    ap.add_argument("--warmup", type=int, default=1, help="steps not timed (default 1)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps (default 2)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--completion-tokens", type=int, default=127, help="before the EOS both sides append")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--trl-grad-ckpt", action="store_true", help="TRL with gradient checkpointing (its default)")
    ap.add_argument("--_child")
    ap.add_argument("--_model")
    ap.add_argument("--_tokenizer")
    ap.add_argument("--_data")
    ap.add_argument("--_result")
    args = ap.parse_args()
    if args._child:
        return trl_child(args)
    args.bin = os.path.abspath(args.bin)
    rows = [r for r in args.rows.split(",") if r]
    if any(r not in ROWS for r in rows):
        ap.error(f"--rows: pick from {','.join(ROWS)}")
    if not in_venv(args.venv):
        ensure_venv(args.venv, __file__, log)  # does not return

    os.makedirs(args.cache, exist_ok=True)
    hf = ensure_model(args.bin, args.cache)
    work = os.path.join(args.cache, "dpo_vs_trl")
    os.makedirs(work, exist_ok=True)
    tokdir, n_fixed = hf_tokenizer_dir(hf, work)
    n_pairs = 4 * (args.warmup + args.steps)
    data = os.path.join(work, f"prefs_{n_pairs}x{args.prompt_tokens}+{args.completion_tokens}.jsonl")
    if not os.path.exists(data):
        make_data(tokdir, data, n_pairs, args.prompt_tokens, args.completion_tokens)

    env = dict(os.environ)
    n = str(args.threads)
    env.update({"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n,
                "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_CACHE": os.path.join(work, "hf_datasets"),
                "PYTHONUNBUFFERED": "1"})
    import torch
    import transformers
    import trl
    report = {
        "bench": "dpo_vs_trl",
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to fp32, HF dir from ckpt_convert)",
        "pairs_per_step": 4, "seq_tokens": args.prompt_tokens + args.completion_tokens + 1,
        "max_length": args.max_length, "threads": args.threads, "warmup_steps": args.warmup,
        "timed_steps": args.steps, "dtype": "fp32",
        "machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
        "versions": {"torch": torch.__version__, "trl": trl.__version__, "transformers": transformers.__version__,
                     "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other"},
        "rows": [],
    }
    if n_fixed:
        report["note_tokenizer"] = (f"{n_fixed} special tokens of {hf}/tokenizer.json were only in added_tokens; "
                                    "HF tokenizers renumbers them, so TRL uses a copy with them in model.vocab")
    del torch, transformers, trl
    t0 = time.perf_counter()
    for row in rows:
        a = align_side(args, hf, data, row, env, work)
        log(f"align {row}: {a['s_per_step']} s/step, {a['peak_rss_mib']} MiB")
        t = trl_side(args, hf, tokdir, data, row, env, work)
        log(f"trl {row}: {t['s_per_step']} s/step, {t['peak_rss_mib']} MiB")
        report["rows"].append({
            "row": row, "align": a, "trl": t,
            "ratio_align_over_trl": {
                "steps_per_s": round(a["steps_per_s"] / t["steps_per_s"], 3),
                "steps_per_s_best_step": round(t["s_per_step_min"] / a["s_per_step_min"], 3),
                "cpu_s_per_step_trl_over_align": round(t["cpu_s_per_step"] / a["cpu_s_per_step"], 3)
                if a.get("cpu_s_per_step") and t.get("cpu_s_per_step") else None,
                "tokens_per_s": round(a["tokens_per_s"] / t["tokens_per_s"], 3),
                "peak_rss": round(a["peak_rss_mib"] / t["peak_rss_mib"], 3),
            },
        })
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["total_wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
