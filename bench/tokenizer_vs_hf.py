#!/usr/bin/env python3
"""Encode throughput of align's tokenizer against Hugging Face `tokenizers`,
both single-threaded, on the same text and the same tokenizer.

Runs bench_tokenizer (C) and then `tokenizers` (TOKENIZERS_PARALLELISM=false,
one Tokenizer.encode call per ~2 KB document, no encode_batch) on the bytes
bench_tokenizer uses, for GPT-2's vocabulary with GPT-2's and Llama-3's
pre-tokenizers (tokenizer.json built from tests/fixtures/gpt2 by the fixture
script's spec). Prints one JSON object per tokenizer with both figures and
the ratio (align / HF; above 1 means align is faster).

    .venv-tok/bin/python bench/tokenizer_vs_hf.py --bin build/bin [--text FILE] [--mb 4]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
from tokenizers import Tokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import make_tokenizer_fixtures as fx  # noqa: E402


def docs_of(text):
    """The same ~2 KB documents, cut after a newline, as bench_tokenizer."""
    b = text.encode("utf-8", errors="surrogateescape")
    out, p = [], 0
    while p < len(b):
        q = min(p + 2048, len(b))
        while q < len(b) and b[q - 1] != 0x0A:
            q += 1
        out.append(b[p:q].decode("utf-8", errors="replace"))
        p = q
    return out


def hf_bench(tok, docs, passes):
    times, tokens = [], 0
    for _ in range(passes):
        t = time.perf_counter()
        tokens = sum(len(tok.encode(d, add_special_tokens=False).ids) for d in docs)
        times.append(time.perf_counter() - t)
    return times[0], min(times[1:]), tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--gpt2-dir", default=fx.GPT2_DIR, help="encoder.json + vocab.bpe (default: %(default)s)")
    ap.add_argument("--text", help="a real text file (default: bench_tokenizer's synthetic text)")
    ap.add_argument("--mb", default="4")
    ap.add_argument("--passes", type=int, default=4)
    args = ap.parse_args()
    exe = os.path.join(args.bin, "bench_tokenizer")
    vocab, merges = fx.load_gpt2(args.gpt2_dir)
    specs = fx.variants()
    with tempfile.TemporaryDirectory() as tmp:
        text_path = args.text
        if not text_path:
            text_path = os.path.join(tmp, "text.txt")
            subprocess.run([exe, "--mb", args.mb, "--dump-text", text_path], check=True)
        with open(text_path, "rb") as f:
            raw = f.read()
        docs = docs_of(raw.decode("utf-8", errors="surrogateescape"))
        for name in ("gpt2", "llama3"):
            path = os.path.join(tmp, name + ".json")
            with open(path, "w", encoding="utf-8") as f:
                f.write(fx.full_json(specs[name], vocab, merges))
            c = json.loads(subprocess.run([exe, "--tokenizer-json", path, "--text", text_path, "--passes",
                                           str(args.passes)], check=True, capture_output=True, text=True).stdout)
            tok = Tokenizer.from_file(path)
            cold, warm, tokens = hf_bench(tok, docs, args.passes)
            hf_cold, hf_warm = len(raw) / cold / 1e6, len(raw) / warm / 1e6
            print(json.dumps({"tokenizer": name, "bytes": len(raw), "docs": len(docs),
                              "align_tokens": c["tokens"], "hf_tokens": tokens,
                              "align_cold_mb_s": c["cold_mb_s"], "align_warm_mb_s": c["warm_mb_s"],
                              "hf_cold_mb_s": round(hf_cold, 2), "hf_warm_mb_s": round(hf_warm, 2),
                              "ratio_cold": round(c["cold_mb_s"] / hf_cold, 2),
                              "ratio_warm": round(c["warm_mb_s"] / hf_warm, 2)}))


if __name__ == "__main__":
    main()
