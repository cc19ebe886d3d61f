"""Read a TensorBoard log directory with tensorboard's own event reader and
check its scalars against a metrics JSONL: every numeric key of every row
(step rows and eval rows) appears under the same tag at the same step, with
the value as float32 (within one float32 rounding of the JSONL's 8 digits). Used by cli/tensorboard.sh; needs the tensorboard
package (a venv), which the test looks for and skips without.

    python tb_read.py LOGDIR METRICS.jsonl
"""
import glob
import json
import math
import os
import sys

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader


def main():
    logdir, metrics = sys.argv[1], sys.argv[2]
    files = sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
    if not files:
        sys.exit(f"no event file in {logdir}")
    got = {}  # (tag, step) -> value
    versions = []
    for path in files:
        for ev in EventFileLoader(path).Load():  # raises on a bad CRC or framing
            if ev.HasField("file_version"):
                versions.append(ev.file_version)
            for v in ev.summary.value:
                # the loader turns simple_value into a tensor for the data
                # provider; read either form
                val = v.simple_value if v.HasField("simple_value") else v.tensor.float_val[0]
                got[(v.tag, ev.step)] = val
    want = {}
    with open(metrics) as f:
        for line in f:
            row = json.loads(line)
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    want[(k, row["step"])] = v
    bad = 0
    if versions != ["brain.Event:2"] * len(files):
        print(f"FAIL: file versions {versions}")
        bad += 1
    for key, v in want.items():
        g = got.get(key)
        tol = 5e-5 if key[0] == "epoch" else 2e-7 * abs(v)  # the JSONL writes epoch with 4 decimals
        if g is None or not (abs(g - v) <= tol or (math.isnan(g) and math.isnan(v))):
            print(f"FAIL: {key[0]} at step {key[1]}: tensorboard read {g}, the JSONL has {v}")
            bad += 1
    extra = set(got) - set(want)
    if extra:
        print(f"FAIL: tags in the events but not in the JSONL: {sorted(extra)[:5]}")
        bad += 1
    tags = sorted({k for k, _ in got})
    print(f"tensorboard read {len(got)} scalars under {len(tags)} tags from {len(files)} file(s): {', '.join(tags[:6])}, ...")
    sys.exit(1 if bad else 0)


main()
