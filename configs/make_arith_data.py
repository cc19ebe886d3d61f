#!/usr/bin/env python3
"""Writes the verifiable set of configs/smollm2_grpo_arith.json: two-digit
additions and subtractions as {"prompt", "answer"} records, which the math
verifier grades (`--reward math`: the last number of the completion against
`answer`). Standard library only, fixed seed: running it again rewrites the
committed files byte for byte.

  data/arith_prompts.jsonl  256 training prompts
  data/arith_heldout.jsonl   32 held-out prompts (no (a, op, b) in common)

SmolLM2-135M-Instruct gets some of these right and many wrong, so GRPO has
reward spread to learn from. Usage: python3 configs/make_arith_data.py"""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = ["What is {a} {op} {b}?", "Compute {a} {op} {b}.", "Calculate {a} {op} {b}. Give just the number."]


def main():
    rng = random.Random(17)
    seen, rows = set(), []
    while len(rows) < 288:
        a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice("+-")
        if op == "-" and b > a:
            a, b = b, a  # no negative answers
        if (a, op, b) in seen:
            continue
        seen.add((a, op, b))
        prompt = rng.choice(TEMPLATES).format(a=a, op=op, b=b)
        rows.append({"prompt": prompt, "answer": str(a + b if op == "+" else a - b)})
    os.makedirs(os.path.join(HERE, "data"), exist_ok=True)
    for name, part in (("arith_prompts.jsonl", rows[:256]), ("arith_heldout.jsonl", rows[256:])):
        with open(os.path.join(HERE, "data", name), "w") as f:
            for r in part:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
