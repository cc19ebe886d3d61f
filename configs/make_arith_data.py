#!/usr/bin/env python3
"""Writes the verifiable set of configs/smollm2_grpo_arith.json: small
additions and subtractions (1..19 and 1..9) as {"prompt", "answer"} records, which the math
verifier grades (`--reward math`: the last number of the completion against
`answer`). Standard library only, fixed seed: running it again rewrites the
committed files byte for byte.

  data/arith_prompts.jsonl  192 training prompts
  data/arith_heldout.jsonl   32 held-out prompts (no (a, op, b) in common)

Small numbers because SmolLM2-135M-Instruct must get some right for GRPO
to have reward spread: on two-digit + two-digit problems, and on 1..49
and 1..9 without the "Reply with only the number." line, its held-out
pass@1 was 0.03 (it explains at length, the verifier reads the last
number). Usage: python3 configs/make_arith_data.py"""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
# "Reply with only the number.": without it the model explains at length and
# the verifier's last number is seldom the answer.
TEMPLATES = ["What is {a} {op} {b}? Reply with only the number.", "Compute {a} {op} {b}. Reply with only the number.",
             "{a} {op} {b} = ? Reply with only the number."]


def main():
    rng = random.Random(17)
    seen, rows = set(), []
    while len(rows) < 224:
        a, b, op = rng.randint(1, 19), rng.randint(1, 9), rng.choice("++-")
        if op == "-" and b > a:
            a, b = b, a  # no negative answers
        if (a, op, b) in seen:
            continue
        seen.add((a, op, b))
        prompt = rng.choice(TEMPLATES).format(a=a, op=op, b=b)
        rows.append({"prompt": prompt, "answer": str(a + b if op == "+" else a - b)})
    os.makedirs(os.path.join(HERE, "data"), exist_ok=True)
    for name, part in (("arith_prompts.jsonl", rows[:192]), ("arith_heldout.jsonl", rows[192:])):
        with open(os.path.join(HERE, "data", name), "w") as f:
            for r in part:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
