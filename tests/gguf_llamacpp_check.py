#!/usr/bin/env python3
"""Load a GGUF written by `ckpt_convert ... OUT.gguf --type TYPE` in llama.cpp
(llama-cpp-python) and check it computes what align computes on the same file
(tests/cli/gguf_export.sh runs it when llama_cpp imports; the test skips
this part otherwise).

    gguf_llamacpp_check.py BIN_DIR OUT.gguf TYPE [TEXT]

  - llama.cpp loads the file (architecture, hyper-parameters, tokenizer
    metadata and tensors all accepted);
  - the prompt's ids from llama.cpp's tokenizer (built from our GGUF's
    tokenizer keys) equal align's (`tokenize --model OUT.gguf`);
  - align's greedy completion (`generate --temperature 0`, no chat
    template) is llama.cpp's: at every step llama.cpp's argmax is align's
    token, or a near tie (align's token within TOL of llama.cpp's best
    logit), and align's log-prob of each token is within TOL of llama.cpp's
    (log-softmax of its logits, teacher-forced on align's tokens). TOL per
    type: the two sides' arithmetic differs only in the activations' rounding
    (llama.cpp multiplies f16 weights with f16 activations, Q8_0/Q4 weights
    with Q8 activations; align fp32 activations for f32/f16/bf16, Q8 for
    quantised weights): 0.01 for f32/f16/bf16, 0.05 for q8_0, 0.1 for the 4-bit
    types.
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


def main():
    bin_dir, path, typ = sys.argv[1:4]
    text = sys.argv[4] if len(sys.argv) > 4 else "The quick brown fox jumps over the lazy dog, and then"
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

    llm = Llama(model_path=path, n_ctx=len(ids) + steps + 8, n_batch=64, n_threads=1, logits_all=True,
                verbose=False)
    lids = llm.tokenize(text.encode(), add_bos=False, special=False)
    check(lids == ids, "prompt ids: llama.cpp %s, align %s" % (lids, ids))
    llm.eval(ids + gen)
    scores = np.array(llm.scores[: len(ids) + len(gen)], dtype=np.float64)
    ll_text = llm.detokenize([int(np.argmax(scores[len(ids) - 1]))]).decode("utf-8", "replace")
    worst_lp = 0.0
    for k, t in enumerate(gen):
        row = scores[len(ids) - 1 + k]
        best = int(np.argmax(row))
        lse = row.max() + math.log(np.exp(row - row.max()).sum())
        worst_lp = max(worst_lp, abs((row[t] - lse) - lps[k]))
        check(best == t or row[best] - row[t] <= tol,
              "step %d: llama.cpp's greedy token %d, align's %d (logits %.4f vs %.4f)" % (k, best, t, row[best], row[t]))
    check(worst_lp <= tol, "log-probs of align's tokens: llama.cpp within %.3g of align's (tolerance %g)" % (worst_lp, tol))
    print("%s (%s): align %r | llama.cpp first token %r | log-probs within %.2g | %d checks failed"
          % (os.path.basename(path), typ, rec["completion"], ll_text, worst_lp, fails))
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
