"""Shared by the CLI tests: how far apart two runs ended.

  python3 ckpt_diff.py ckpt A.ckpt B.ckpt [TOL]      max |a - b| over every F32 tensor
  python3 ckpt_diff.py metrics A.jsonl B.jsonl [TOL] max |a - b| over the steps' losses

Prints the figure; exits 0 when it is within TOL (default 1e-5), 1 when not,
and 2 when the files do not hold the same tensors or the same number of
steps. Standard library only."""
import json
import struct
import sys
from array import array


def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    d = b[8 + n:]
    return {k: array("f", d[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in h.items() if k != "__metadata__" and v["dtype"] == "F32"}


def losses(path):
    return [json.loads(l)["loss"] for l in open(path) if '"loss"' in l and '"eval_' not in l]


def main():
    kind, a, b = sys.argv[1:4]
    tol = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-5
    if kind == "ckpt":
        x, y = tensors(a), tensors(b)
        if x.keys() != y.keys() or not x:
            print("different tensors")
            sys.exit(2)
        d = max(max((abs(u - v) for u, v in zip(x[k], y[k])), default=0.0) for k in x)
    else:
        x, y = losses(a), losses(b)
        if len(x) != len(y) or not x:
            print(f"{len(x)} vs {len(y)} steps")
            sys.exit(2)
        d = max(abs(u - v) for u, v in zip(x, y))
    print(f"{d:.2e}")
    sys.exit(0 if d <= tol else 1)


main()
