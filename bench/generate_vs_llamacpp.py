#!/usr/bin/env python3
"""Decoding speed of align's `generate` path against llama.cpp on the same GGUF.

Same file, same prompt ids, same thread count, greedy, a fixed number of
steps (no stop at EOS) on both sides:

  prefill     one prompt of --prefill tokens in one forward (tokens/s)
  decode_b1   one sequence, --steps greedy steps after the prompt (tokens/s)
  decode_bB   --batch sequences of the prompt decoding together, aggregate
              tokens/s (llama.cpp: all B tokens of a step in one llama_batch,
              one sequence id each, through the low-level API)

align runs build/bin/bench_gguf_decode (gguf_import_blocks, as `generate`
loads a GGUF: the file's blocks, int8 inputs); llama.cpp is llama-cpp-python
(its own llama.cpp build) in this process. Each figure is the best of
--reps runs; the process CPU seconds of that run are reported too (on a
loaded machine wall time is noise, CPU time much less so). Also: the prompt's
ids from llama.cpp's tokenizer (our GGUF's metadata) against align's, and the
greedy ids of the batch-1 runs.

Types: q4_1 is the file itself; q8_0 and q4_k_m are made from it by
llama.cpp's quantizer (llama_model_quantize, --allow-requantize) into
cache/ on first use (speed only: requantised from Q4_1 they are not better
models).

It needs llama-cpp-python: in --venv (default .venv-llama, made by
`python3 -m venv .venv-llama && .venv-llama/bin/pip install llama-cpp-python`,
which builds llama.cpp for this CPU) it re-runs itself there. JSON on stdout.

  python3 bench/generate_vs_llamacpp.py [--model cache/SmolLM2-135M-Instruct.Q4_1.gguf]
      [--types q4_1,q8_0,q4_k_m] [--threads N] [--steps 64] [--batch 16] [--prefill 256] [--reps 3]
"""
import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def reexec_in_venv(venv):
    try:
        import llama_cpp  # noqa: F401
        return
    except ImportError:
        pass
    py = os.path.join(ROOT, venv, "bin", "python")
    if not os.path.exists(py) or os.path.realpath(sys.prefix) == os.path.realpath(os.path.join(ROOT, venv)):
        sys.exit("llama_cpp is not importable; make %s (see the docstring)" % venv)
    os.execv(py, [py] + sys.argv)


def align_ids(bin_dir, model, text):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write(json.dumps({"text": text}) + "\n")
    try:
        out = subprocess.run([os.path.join(bin_dir, "tokenize"), "--model", model, "--special", "--data", f.name],
                             check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    return [int(x) for x in out.split()]


def quantize(src, dst, ftype):
    import llama_cpp
    if os.path.exists(dst):
        return
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.allow_requantize = True
    p.nthread = 2
    if llama_cpp.llama_model_quantize(src.encode(), (dst + ".tmp").encode(), ctypes.byref(p)) != 0:
        sys.exit("llama_model_quantize failed for %s" % dst)
    os.rename(dst + ".tmp", dst)


class LlamaCpp:
    """llama.cpp through llama-cpp-python's low-level API."""

    def __init__(self, path, threads):
        import llama_cpp as L
        self.L = L
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            sys.exit("llama.cpp could not load %s" % path)
        self.vocab = L.llama_model_get_vocab(self.model)
        self.V = L.llama_vocab_n_tokens(self.vocab)
        self.threads = threads

    def tokenize(self, text):
        L = self.L
        b = text.encode()
        buf = (L.llama_token * (len(b) + 16))()
        n = L.llama_tokenize(self.vocab, b, len(b), buf, len(buf), False, True)
        return list(buf[:n])

    def context(self, n_seq, n_ctx, n_batch):
        L = self.L
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = n_batch
        cp.n_seq_max = n_seq
        cp.n_threads = self.threads
        cp.n_threads_batch = self.threads
        ctx = L.llama_init_from_model(self.model, cp)
        if not ctx:
            sys.exit("llama.cpp could not make a context (n_ctx %d, %d sequences)" % (n_ctx, n_seq))
        return ctx

    def decode(self, ctx, batch, entries):
        """entries: (token, pos, seq, want_logits)"""
        batch.n_tokens = len(entries)
        for i, (t, p, s, lg) in enumerate(entries):
            batch.token[i] = t
            batch.pos[i] = p
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = s
            batch.logits[i] = 1 if lg else 0
        if self.L.llama_decode(ctx, batch) != 0:
            sys.exit("llama_decode failed")

    def argmax(self, ctx, i):
        import numpy as np
        p = self.L.llama_get_logits_ith(ctx, i)
        return int(np.argmax(np.ctypeslib.as_array(p, shape=(self.V,))))

    def run(self, prompt, B, steps, prefill_only=False):
        """B sequences of prompt, prefilled in one batch, then `steps` greedy
        steps; returns (decode wall, decode cpu, prefill wall, prefill cpu, ids of seq 0)."""
        L = self.L
        P = len(prompt)
        n_batch = max(B * P, B, 32)
        n_ctx = ((B * (P + steps + 8) + 255) // 256) * 256
        ctx = self.context(B, n_ctx, n_batch)
        batch = L.llama_batch_init(n_batch, 0, B)
        w0, c0 = time.perf_counter(), time.process_time()
        self.decode(ctx, batch, [(t, p, s, p == P - 1) for s in range(B) for p, t in enumerate(prompt)])
        pre = (time.perf_counter() - w0, time.process_time() - c0)
        nxt = [self.argmax(ctx, s * P + P - 1) for s in range(B)]
        ids = []
        w0, c0 = time.perf_counter(), time.process_time()
        for k in range(0 if prefill_only else steps):
            ids.append(nxt[0])
            self.decode(ctx, batch, [(nxt[s], P + k, s, True) for s in range(B)])
            nxt = [self.argmax(ctx, s) for s in range(B)]
        dec = (time.perf_counter() - w0, time.process_time() - c0)
        L.llama_batch_free(batch)
        L.llama_free(ctx)
        return dec[0], dec[1], pre[0], pre[1], ids


def best(runs):
    return min(runs, key=lambda r: r[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "cache/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--types", default="q4_1,q8_0,q4_k_m")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prefill", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/bin"))
    ap.add_argument("--venv", default=".venv-llama")
    a = ap.parse_args()
    reexec_in_venv(a.venv)
    import llama_cpp
    ftypes = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
              "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0}
    base = os.path.splitext(a.model)[0]
    stem = base.rsplit(".", 1)[0] if "." in os.path.basename(base) else base
    result = {"model": a.model, "threads": a.threads, "steps": a.steps, "batch": a.batch, "prefill": a.prefill,
              "reps": a.reps, "llama_cpp_python": llama_cpp.__version__, "loadavg_before": os.getloadavg()[0],
              "types": {}}
    for typ in a.types.split(","):
        path = a.model if typ == "q4_1" else "%s.%s.gguf" % (stem, typ.upper())
        if typ != "q4_1":
            quantize(a.model, path, ftypes[typ])
        ids = align_ids(a.bin, path, PROMPT)
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OMP_WAIT_POLICY="passive")
        out = subprocess.run([os.path.join(a.bin, "bench_gguf_decode"), path, "--prompt-ids", ",".join(map(str, ids)),
                              "--steps", str(a.steps), "--batch", str(a.batch), "--prefill", str(a.prefill),
                              "--reps", str(a.reps)], check=True, capture_output=True, text=True, env=env).stdout
        al = json.loads(out)
        lc = LlamaCpp(path, a.threads)
        lids = lc.tokenize(PROMPT)
        pf = [ids[i % len(ids)] for i in range(a.prefill)]
        lc.run(ids, 1, 4)  # warm up
        r_pf, r_1, r_b = [], [], []
        for _ in range(a.reps):
            r_pf.append(lc.run(pf, 1, 0, prefill_only=True)[2:4])
            r_1.append(lc.run(ids, 1, a.steps))
            r_b.append(lc.run(ids, a.batch, a.steps))
        pf_b, one, bat = best(r_pf), best(r_1), best(r_b)
        ll = {"prefill": {"tokens_per_s": a.prefill / pf_b[0], "cpu_s": pf_b[1]},
              "decode_b1": {"tokens_per_s": a.steps / one[0], "cpu_s": one[1]},
              "decode_b%d" % a.batch: {"tokens_per_s": a.batch * a.steps / bat[0], "cpu_s": bat[1]}}
        key_b = "decode_b%d" % a.batch
        al_ids = al.pop("tokens_b1")
        same = 0
        while same < min(len(al_ids), len(one[4])) and al_ids[same] == one[4][same]:
            same += 1
        ratio = {k: {"wall": al[k]["tokens_per_s"] / ll[k]["tokens_per_s"], "cpu": ll[k]["cpu_s"] / al[k]["cpu_s"]}
                 for k in ("prefill", "decode_b1", key_b)}
        result["types"][typ] = {"file": path, "align": {k: al[k] for k in ("lm_head", "prefill", "decode_b1", key_b)},
                                "llama_cpp": ll, "align_over_llama_cpp": ratio,
                                "prompt_ids_equal": ids == lids, "prompt_tokens": len(ids),
                                "greedy_ids_equal_prefix": same}
        print(json.dumps({typ: ratio}), file=sys.stderr)
    result["loadavg_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
