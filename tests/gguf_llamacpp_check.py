#!/usr/bin/env python3
"""Load a GGUF written by `ckpt_convert ... OUT.gguf --type TYPE` in llama.cpp
(llama-cpp-python) and check it computes what align computes on the same file
(tests/cli/gguf_export.sh runs it when llama_cpp imports; the test skips
this part otherwise).

    gguf_llamacpp_check.py BIN_DIR OUT.gguf TYPE [TEXT] [--reference REF.json]

  - llama.cpp loads the file (architecture, hyper-parameters, tokenizer
    metadata and tensors all accepted);
  - the prompt's ids from llama.cpp's tokenizer (built from our GGUF's
    tokenizer keys) equal align's (`tokenize --model OUT.gguf`);
  - align's greedy completion (`generate --temperature 0`, no chat
    template; BOS first when the file's add_bos_token says so, as llama.cpp
    does) is llama.cpp's: at every step llama.cpp's argmax is align's
    token, or a near tie (align's token within TOL of llama.cpp's best
    logit), and align's log-prob of each token is within TOL of llama.cpp's
    (log-softmax of its logits, teacher-forced on align's tokens). TOL per
    type: the two sides' arithmetic differs only in the activations' rounding
    (llama.cpp multiplies f16 weights with f16 activations, Q8_0/Q4 weights
    with Q8 activations; align fp32 activations for f32/f16/bf16, Q8 for
    quantised weights): 0.01 for f32/f16/bf16, 0.05 for q8_0, 0.1 for the 4-bit
    types.
  - with --reference (a fixture's reference.json: transformers' fp32
    next-token log-probs of fixed id sequences, "last_logits" when present,
    which align's own tests hold align to within 1e-4): llama.cpp's
    teacher-forced log-probs (logits_all) of every position of every
    sequence, and its last-position logits, within the same TOL. A longrope
    model's sequences no longer than original_max are left out: llama.cpp
    picks the long factors by its context size (padded to 256 tokens), not
    by the sequence, so it uses them for every sequence of these tiny
    fixtures (original_max 16), where transformers uses the short ones.
    The reference is fp32, so this holds the weights' own rounding to TOL
    too: meant for f32, f16 and q8_0 (bf16 and the 4-bit types round the
    tiny fixtures' weights by more than their tolerance).
Prints the two completions and one line per failed check; exits 1 if any.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
from llama_cpp import Llama

TOL = {"f32": 0.01, "f16": 0.01, "bf16": 0.01, "q8_0": 0.25, "q4_0": 0.5, "q4_k_m": 0.5}
fails = 0


def check(ok, what):
    global fails
    if not ok:
        fails += 1
        print("FAIL:", what)


def log_softmax(rows):
    m = rows.max(axis=1, keepdims=True)
    return rows - (m + np.log(np.exp(rows - m).sum(axis=1, keepdims=True)))


def against_reference(llm, ref_path, tol):
    """llama.cpp's log-probs and last logits of the reference sequences
    against transformers'; returns (worst log-prob diff, worst logit diff,
    positions compared)."""
    ref = json.load(open(ref_path))
    # written only with longrope's factor tensors (gguf_write)
    orig = llm.metadata.get("phi3.rope.scaling.original_context_length")
    longrope = orig is not None
    worst_lp = worst_logit = 0.0
    n = 0
    for s, (seq, want) in enumerate(zip(ref["sequences"], ref["logprobs"])):
        if longrope and len(seq) <= int(orig):
            continue
        llm.reset()
        llm.eval(seq)
        rows = np.array(llm.scores[: len(seq)], dtype=np.float64)
        got = log_softmax(rows)[np.arange(len(seq) - 1), seq[1:]]
        worst_lp = max(worst_lp, float(np.abs(got - np.array(want[: len(seq) - 1])).max()))
        n += len(seq) - 1
        if "last_logits" in ref:
            worst_logit = max(worst_logit, float(np.abs(rows[-1] - np.array(ref["last_logits"][s])).max()))
    check(n > 0, "reference: no sequence compared")
    check(worst_lp <= tol, "reference log-probs: llama.cpp within %.3g of transformers' (tolerance %g)" % (worst_lp, tol))
    check(worst_logit <= tol, "reference last logits: llama.cpp within %.3g of transformers' (tolerance %g)"
          % (worst_logit, tol))
    return worst_lp, worst_logit, n


def main():
    args = sys.argv[1:]
    ref_path = None
    if "--reference" in args:
        k = args.index("--reference")
        ref_path = args[k + 1]
        del args[k: k + 2]
    bin_dir, path, typ = args[:3]
    text = args[3] if len(args) > 3 else "The quick brown fox jumps over the lazy dog, and then"
    tol = TOL.get(typ, 0.1)
    steps = 12
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "t.jsonl"), "w") as f:
            f.write(json.dumps({"text": text}) + "\n")
        with open(os.path.join(d, "p.jsonl"), "w") as f:
            f.write(json.dumps({"prompt": text}) + "\n")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        ids = [int(x) for x in subprocess.run([os.path.join(bin_dir, "tokenize"), "--model", path, "--data",
                                               os.path.join(d, "t.jsonl")], check=True, capture_output=True,
                                              text=True, env=env).stdout.split()]
        out = subprocess.run([os.path.join(bin_dir, "generate"), "--model", path, "--prompts", os.path.join(d, "p.jsonl"),
                              "--chat-template", "none", "--temperature", "0", "--max-new-tokens", str(steps)],
                             check=True, capture_output=True, text=True, env=env).stdout
    rec = json.loads(out.splitlines()[0])
    gen, lps = rec["tokens"], rec["logprobs"]

    n_ctx = len(ids) + steps + 8
    if ref_path:
        n_ctx = max(n_ctx, max(len(q) for q in json.load(open(ref_path))["sequences"]) + 8)
    llm = Llama(model_path=path, n_ctx=n_ctx, n_batch=64, n_threads=1, logits_all=True,
                verbose=False)
    lids = llm.tokenize(text.encode(), add_bos=False, special=False)
    check(lids == ids, "prompt ids: llama.cpp %s, align %s" % (lids, ids))
    if llm.metadata.get("tokenizer.ggml.add_bos_token") == "true":  # generate starts with it too
        ids = [llm.token_bos()] + ids
    llm.eval(ids + gen)
    scores = np.array(llm.scores[: len(ids) + len(gen)], dtype=np.float64)
    ll_text = llm.detokenize([int(np.argmax(scores[len(ids) - 1]))]).decode("utf-8", "replace")
    worst_lp = 0.0
    agree = 0
    for k, t in enumerate(gen):
        row = scores[len(ids) - 1 + k]
        best = int(np.argmax(row))
        lse = row.max() + math.log(np.exp(row - row.max()).sum())
        worst_lp = max(worst_lp, abs((row[t] - lse) - lps[k]))
        agree += best == t
        check(best == t or row[best] - row[t] <= tol,
              "step %d: llama.cpp's greedy token %d, align's %d (logits %.4f vs %.4f)" % (k, best, t, row[best], row[t]))
    check(worst_lp <= tol, "log-probs of align's tokens: llama.cpp within %.3g of align's (tolerance %g)" % (worst_lp, tol))
    refs = ""
    if ref_path:
        rlp, rlogit, n = against_reference(llm, ref_path, tol)
        refs = " | reference: %d log-probs within %.2g" % (n, rlp)
        if "last_logits" in json.load(open(ref_path)):
            refs += ", last logits within %.2g" % rlogit
    print("%s (%s): align %r | llama.cpp first token %r | greedy: llama.cpp's argmax is align's token at %d of %d "
          "steps | log-probs within %.2g%s | %d checks failed"
          % (os.path.basename(path), typ, rec["completion"], ll_text, agree, len(gen), worst_lp, refs, fails))
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
