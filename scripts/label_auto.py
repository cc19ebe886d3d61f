#!/usr/bin/env python3
"""label_auto: preference pairs labelled by a reward model (RLAIF, best-of-n).

k samples per prompt (from align's `generate`, or an existing JSONL of
{prompt, completion} records) are scored by align's `rm_score` (a reward
model file with --reward, or a running reward_server with
--reward-connect), and each prompt gives its best-vs-worst pair, or with
--pairs all every pair the scores order, as prefs.jsonl:

  {"prompt", "chosen", "rejected", "margin", "score_chosen", "score_rejected"}

margin = score_chosen - score_rejected (rm_train's margin term reads it;
dpo_run ignores it). Pairs whose margin is below --min-margin are counted
as ties and left out: a reward model's coin flips are not preferences.
"""
import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labeling as L  # noqa: E402

PROG = "label_auto"
E = L.LabelError
HERE = os.path.dirname(os.path.abspath(__file__))


def score(bin_path, reward, connect, groups, extra):
    """Scores of every sample, in the groups' order. rm_score reads
    {prompt, completion} records (the prompt as the policy saw it before
    templating, so the reward model applies its own template) and writes
    one JSONL line with "score" per record, in order."""
    fd, data = tempfile.mkstemp(prefix="label-auto-", suffix=".jsonl")
    n = 0
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for g in groups:
            for _, text in g.samples:
                f.write(json.dumps({"prompt": g.prompt, "completion": text}, ensure_ascii=False) + "\n")
                n += 1
    cmd = [bin_path] + (["--model", reward] if reward else ["--connect", connect]) + ["--data", data] + extra
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    except OSError as e:
        raise E("--rm-score-bin %s: cannot run (%s)" % (bin_path, e.strerror or e))
    finally:
        os.unlink(data)
    if r.returncode != 0:
        last = [l for l in r.stderr.splitlines() if l.strip()]
        raise E("rm_score failed (exit %d): %s" % (r.returncode, last[-1] if last else "no message"))
    scores = []
    for k, line in enumerate(r.stdout.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise E("rm_score output line %d: invalid JSON (%s)" % (k, e))
        s = rec.get("score") if isinstance(rec, dict) else None
        if not isinstance(s, (int, float)) or isinstance(s, bool) or s != s:
            raise E('rm_score output line %d: no numeric "score"' % k)
        scores.append(float(s))
    if len(scores) != n:
        raise E("rm_score wrote %d scores for %d records" % (len(scores), n))
    return scores


def pairs_of(g, scores, mode, min_margin, stats):
    """Best vs worst, or every pair with its higher-scored side chosen."""
    scored = list(zip(scores, range(len(scores)), g.samples))
    if mode == "best-worst":
        best = max(scored, key=lambda x: (x[0], -x[1]))
        worst = min(scored, key=lambda x: (x[0], x[1]))
        cand = [(best, worst)]
    else:
        cand = [(x, y) if (x[0], -x[1]) >= (y[0], -y[1]) else (y, x) for x, y in itertools.combinations(scored, 2)]
    out = []
    for c, r in cand:
        m = c[0] - r[0]
        if m <= 0 or m < min_margin:
            stats["tied"] += 1
            continue
        if not c[2][1] or not r[2][1]:
            stats["unusable"] += 1
            continue
        out.append({"prompt": g.prompt, "chosen": c[2][1], "rejected": r[2][1], "margin": m,
                    "score_chosen": c[0], "score_rejected": r[0]})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="examples:\n"
                                        "  label_auto.py --prompts prompts.jsonl --model sft.ckpt --n 4 "
                                        "--reward rm.ckpt --out prefs.jsonl\n"
                                        "  label_auto.py --samples samples.jsonl --reward-connect "
                                        "tcp://127.0.0.1:5555 --pairs all --out prefs.jsonl")
    src = ap.add_argument_group("samples (as label_export)")
    src.add_argument("--samples", metavar="FILE", help="existing {prompt, completion} JSONL (generate's output is one)")
    src.add_argument("--prompts", metavar="FILE", help="prompts to sample with --model; with --samples, the file "
                     "generate was given (its \"index\" restores the original prompt)")
    src.add_argument("--model", metavar="M", help="policy to sample from")
    src.add_argument("--n", type=int, default=4, metavar="K", help="samples per prompt (default 4)")
    src.add_argument("--temperature", type=float, default=1.0)
    src.add_argument("--max-new-tokens", type=int, default=0, metavar="N")
    src.add_argument("--seed", type=int, default=0)
    src.add_argument("--generate-bin", metavar="PATH", help="default: build/bin/generate of this repo")
    src.add_argument("--generate-arg", action="append", default=[], metavar="ARG")
    rm = ap.add_argument_group("scoring")
    rm.add_argument("--reward", metavar="RM", help="reward model for rm_score --model")
    rm.add_argument("--reward-connect", metavar="EP", help="a running reward_server, for rm_score --connect")
    rm.add_argument("--rm-score-bin", metavar="PATH", help="default: build/bin/rm_score of this repo")
    rm.add_argument("--rm-score-arg", action="append", default=[], metavar="ARG", help="extra rm_score argument")
    ap.add_argument("--pairs", choices=["best-worst", "all"], default="best-worst",
                    help="best vs worst per prompt (default), or every ordered pair")
    ap.add_argument("--min-margin", type=float, default=0.0,
                    help="pairs scored closer than this are ties, left out (default 0: only equal scores)")
    ap.add_argument("--scores-out", metavar="FILE", help="also write every sample with its score")
    ap.add_argument("--out", required=True, metavar="FILE", help="prefs.jsonl to write")
    a = ap.parse_args(argv)
    try:
        if bool(a.reward) == bool(a.reward_connect):
            raise E("give one of --reward RM or --reward-connect EP")
        if not a.samples and not (a.prompts and a.model):
            raise E("give --samples FILE, or --prompts FILE with --model M")
        if a.samples and a.model:
            raise E("--samples and --model exclude each other")
        if a.model and a.n < 2:
            raise E("--n %d: at least 2 samples per prompt are needed to compare" % a.n)
        prompts = L.read_prompts(a.prompts) if a.prompts else None
        tmp = None
        if a.model:
            fd, tmp = tempfile.mkstemp(prefix="label-auto-samples-", suffix=".jsonl")
            os.close(fd)
            L.run_generate(a.generate_bin or os.path.join(HERE, "..", "build", "bin", "generate"), a.model, prompts,
                           a.n, a.temperature, a.seed, a.max_new_tokens, a.generate_arg, tmp)
        try:
            groups, n_rec = L.group_samples(L.read_records(tmp or a.samples), prompts)
        finally:
            if tmp:
                os.unlink(tmp)
        stats = {"tied": 0, "unusable": 0}
        few = [g for g in groups if len(g.samples) < 2]
        groups = [g for g in groups if len(g.samples) >= 2]
        if not groups:
            raise E("no prompt has two distinct completions to compare")
        scores = score(a.rm_score_bin or os.path.join(HERE, "..", "build", "bin", "rm_score"), a.reward,
                       a.reward_connect, groups, a.rm_score_arg)
        out, scored, k = [], [], 0
        for g in groups:
            s = scores[k:k + len(g.samples)]
            k += len(g.samples)
            out += pairs_of(g, s, a.pairs, a.min_margin, stats)
            scored += [{"prompt": g.prompt, "completion": t, "sample": sid, "score": v}
                       for (sid, t), v in zip(g.samples, s)]
        if a.scores_out:
            L.write_jsonl(a.scores_out, scored)
        if not out:
            raise E("every pair was a tie (below --min-margin %g); nothing to write" % a.min_margin)
        L.write_jsonl(a.out, out)
    except E as e:
        L.die(PROG, e)
    print("%s: %d samples of %d prompts scored -> %d pairs (%s), %d ties below --min-margin left out, "
          "%d with an empty completion left out, %d repeated completions merged, %d prompts with fewer than 2 "
          "distinct completions left out -> %s"
          % (PROG, n_rec, len(groups) + len(few), len(out), a.pairs, stats["tied"], stats["unusable"],
             sum(g.duplicates for g in groups + few), len(few), a.out), file=sys.stderr)


if __name__ == "__main__":
    main()
