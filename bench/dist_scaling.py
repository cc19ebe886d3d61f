#!/usr/bin/env python3
"""Data-parallel scaling on this machine: sft_run step time and time in
collectives per step for

  1 process x 1 thread, 1 process x 2 threads,
  2 ranks x 1 thread (mpirun, plain data parallelism, ZeRO-0), with the
    gradient sum overlapping the backward pass (--dist-overlap 1, the
    default: one MPI_Iallreduce per layer as the backward finishes it) and
    without (--dist-overlap 0: one all-reduce after the backward),
  2 ranks x 1 thread with ZeRO-1,

on a random Llama-shaped model from model_init (byte tokenizer) and
synthetic SFT records, same global batch in every row. Prints one JSON
object: per row the median step time and time in collectives (after
--warmup steps), tokens/s, the achieved training FLOP/s (6 x params x
tokens / step time), the all-reduce's effective bus bandwidth
(2(N-1)/N x gradient bytes / time in collectives: an underestimate, since
that time includes waiting for the slower rank), peak RSS per process, and
the all-reduce alone at the gradient's size (bench_allreduce, after a
barrier).
docs/SCALING.md feeds these into the cost model. Python's standard library
only. About 2 minutes on 2 cores with the defaults:

  python3 bench/dist_scaling.py --bin build/bin [--dim 256] [--layers 4] [--steps 8]
"""
import argparse, json, os, re, statistics, subprocess, sys, tempfile


def run(cmd, env, err_path):
    """Run cmd; return (exit code, its peak RSS in MiB from wait4)."""
    with open(err_path, "w") as err:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, ru.ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8, help="global batch (examples per step)")
    ap.add_argument("--seq", type=int, default=128, help="tokens per example")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    b = os.path.abspath(args.bin)
    tmp = tempfile.mkdtemp(prefix="dist_scaling-")
    model = os.path.join(tmp, "model.ckpt")
    subprocess.run([f"{b}/model_init", "--dim", str(args.dim), "--layers", str(args.layers), "--heads", "4",
                    "--out", model], check=True, stderr=subprocess.DEVNULL)
    data = os.path.join(tmp, "sft.jsonl")
    words = "the quick brown fox jumps over a lazy dog while seven cats watch".split()
    with open(data, "w") as f:
        for i in range(args.batch * (args.steps + 1)):
            text = " ".join(words[(i + k) % len(words)] for k in range(args.seq // 4))
            f.write(json.dumps({"prompt": "say:", "completion": text[: args.seq - 8]}) + "\n")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl="self,vader,tcp", OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo",
               OMP_WAIT_POLICY="passive")
    common = ["--model", model, "--data", data, "--batch-size", str(args.batch), "--max-length", str(args.seq),
              "--max-steps", str(args.steps), "--lr", "1e-4"]
    rows = [("1 process x 1 thread", 1, 1, 0, 1), ("1 process x 2 threads", 1, 2, 0, 1),
            ("2 ranks x 1 thread, ZeRO-0", 2, 1, 0, 1), ("2 ranks x 1 thread, ZeRO-1", 2, 1, 1, 1),
            ("2 ranks x 1 thread, ZeRO-0, no overlap", 2, 1, 0, 0)]
    out = {"model": {"dim": args.dim, "layers": args.layers}, "global_batch": args.batch, "seq": args.seq, "rows": []}
    for name, ranks, threads, zero, overlap in rows:
        tag = f"r{ranks}t{threads}z{zero}o{overlap}"
        metrics, err = os.path.join(tmp, tag + ".jsonl"), os.path.join(tmp, tag + ".err")
        cmd = [f"{b}/sft_run", *common, "--out", os.path.join(tmp, tag + ".ckpt"), "--metrics", metrics]
        if ranks > 1:
            cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks), *cmd, "--zero-stage", str(zero),
                   "--dist-overlap", str(overlap)]
        rc, rss = run(cmd, dict(env, OMP_NUM_THREADS=str(threads)), err)
        text = open(err).read()
        if rc != 0:
            sys.exit(f"{name}: exit {rc}:\n{text[-2000:]}")
        steps = [json.loads(l) for l in open(metrics) if '"step_time_s"' in l][args.warmup:]
        step = statistics.median(s["step_time_s"] for s in steps)
        comm = statistics.median(s.get("comm_time_s", 0.0) for s in steps)
        tokens = statistics.median(s["tokens_per_s"] * s["step_time_s"] for s in steps)
        per_rank = [float(x) for x in re.findall(r"peak memory ([0-9.]+) MiB", text)]
        moments = re.search(r"AdamW moments ([0-9.]+) MiB per rank \(([0-9.]+) MiB unsharded", text)
        row = {"name": name, "ranks": ranks, "threads": threads, "zero_stage": zero,
               "overlap": overlap if ranks > 1 else None,
               "step_s": round(step, 4), "comm_s": round(comm, 4), "tokens_per_step": round(tokens),
               "tokens_per_s": round(tokens / step, 1),
               "peak_rss_mib_per_process": max(per_rank) if per_rank else round(rss, 1)}
        early = re.search(r"(\d+) of (\d+) gradient buckets were started during the backward", text)
        if early:
            row["buckets_started_in_backward"] = f"{early.group(1)} of {early.group(2)}"
        if moments:
            row["moments_mib_per_rank"] = float(moments.group(1))
            row["moments_mib_unsharded"] = float(moments.group(2))
        out["rows"].append(row)
        print(f"{name}: {row}", file=sys.stderr)
    # the gradient buffer: the unsharded moments are two of it
    grad_bytes = out["rows"][2].get("moments_mib_unsharded", 0) / 2 * 1048576
    n_params = grad_bytes / 4
    out["grad_mib"] = round(grad_bytes / 1048576, 2)
    for row in out["rows"]:
        row["train_gflop_per_s"] = round(6 * n_params * row["tokens_per_step"] / row["step_s"] / 1e9, 2)
        if row["ranks"] > 1 and row["comm_s"] > 0:
            n = row["ranks"]
            row["allreduce_bus_gb_per_s"] = round(2 * (n - 1) / n * grad_bytes / row["comm_s"] / 1e9, 2)
    # the all-reduce alone at this gradient size, after a barrier (no waiting counted)
    ar = subprocess.run(["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "2", f"{b}/bench_allreduce",
                         "--mib", str(max(out["grad_mib"], 0.01))], env=dict(env, OMP_NUM_THREADS="1"),
                        capture_output=True, text=True)
    if ar.returncode == 0:
        out["allreduce_alone"] = json.loads(ar.stdout.strip().splitlines()[-1])
    base = out["rows"][0]["step_s"]
    for row in out["rows"]:
        row["speedup_vs_1x1"] = round(base / row["step_s"], 2)
    print(json.dumps(out, indent=1))
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
