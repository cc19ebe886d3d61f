#!/usr/bin/env python3
"""The data-parallel cost model of docs/SCALING.md, as tables (markdown).

Per optimizer step every rank all-reduces the gradient (ring: each rank
sends and receives 2(N-1)/N x the gradient's bytes) and computes
6 x params x tokens FLOPs. Memory per rank for AdamW: weights + gradients
+ optimizer state (fp32 moments, and an fp32 master copy in mixed
precision), the state divided by N under ZeRO-1.

  python3 bench/scaling_model.py [--rate-tflops 400] [--tokens 16384] [--hbm-gb 80]
"""
import argparse

MODELS = {"1B (Llama-3.2-1B, 1.24e9)": 1.24e9, "8B (Llama-3.1-8B, 8.03e9)": 8.03e9}
GPUS = [8, 16, 32, 64]
LINKS_GBIT = [100, 200, 400]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate-tflops", type=float, default=400.0,
                    help="achieved training FLOP/s per GPU (H100 bf16 dense peak 989 at ~40%% MFU)")
    ap.add_argument("--tokens", type=int, default=16384, help="tokens per GPU per optimizer step")
    ap.add_argument("--grad-bytes", type=int, default=2, help="bytes per gradient element on the wire (bf16: 2)")
    ap.add_argument("--hbm-gb", type=float, default=80.0)
    a = ap.parse_args()
    rate = a.rate_tflops * 1e12
    print(f"Step time per GPU at {a.rate_tflops:g} TFLOP/s and {a.tokens} tokens per GPU per step; "
          f"all-reduce of {a.grad_bytes}-byte gradients (ring); ratio = all-reduce / compute "
          f"(hidden behind the backward pass, 2/3 of compute, when <= 0.67)\n")
    print("| model | GPUs | compute s | all-reduce s at 100 / 200 / 400 Gb/s | ratio at 100 / 200 / 400 |")
    print("| --- | --- | --- | --- | --- |")
    for name, p in MODELS.items():
        comp = 6 * p * a.tokens / rate
        for n in GPUS:
            comm = [2 * (n - 1) / n * a.grad_bytes * p / (g * 1e9 / 8) for g in LINKS_GBIT]
            print(f"| {name} | {n} | {comp:.2f} | {' / '.join(f'{c:.2f}' for c in comm)} | "
                  f"{' / '.join(f'{c / comp:.2f}' for c in comm)} |")
    print("\nTokens per GPU per step needed to hide the all-reduce behind the backward pass "
          "(T >= (N-1)/N x grad_bytes/2 x rate / link bytes/s; independent of the model's size):\n")
    print("| GPUs | 100 Gb/s | 200 Gb/s | 400 Gb/s |")
    print("| --- | --- | --- | --- |")
    for n in GPUS:
        t = [(n - 1) / n * a.grad_bytes / 2 * rate / (g * 1e9 / 8) for g in LINKS_GBIT]
        print(f"| {n} | {' | '.join(f'{x / 1000:.1f}k' for x in t)} |")
    print(f"\nAdamW memory per GPU in GB (weights + gradients + optimizer state, no activations), "
          f"against {a.hbm_gb:g} GB:\n")
    print("| model | plain DP, bf16 mixed (16 B/param) | ZeRO-1 N=8 | ZeRO-1 N=64 | plain DP, fp32 (16 B/param) | ZeRO-1 fp32 N=8 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, p in MODELS.items():
        mixed = lambda n: (2 + 2 + 12 / n) * p / 1e9  # bf16 weights+grads; fp32 master, m, v sharded
        fp32 = lambda n: (4 + 4 + 8 / n) * p / 1e9    # align today: fp32 weights+grads; m, v sharded
        cells = [mixed(1), mixed(8), mixed(64), fp32(1), fp32(8)]
        print(f"| {name} | " + " | ".join(f"{c:.1f}{' (no)' if c > a.hbm_gb else ''}" for c in cells) + " |")


if __name__ == "__main__":
    main()
