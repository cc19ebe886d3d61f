#!/usr/bin/env python3
"""label_export: model samples -> files people label.

Samples come from align's `generate` (k completions per prompt) or from an
existing JSONL of {prompt, completion} records (generate's output among
them), grouped by prompt. Written to --out-dir:

  labelstudio_pairwise.json/.xml   Label Studio tasks + Pairwise config
  labelstudio_ranking.json/.xml    ranking tasks + LLM-ranker config
                                   (only for prompts with 3+ completions)
  pairs.csv                        one pair per row, a "choice" column to fill
                                   (A, B, tie, or empty for no preference)
  argilla.jsonl                    Argilla records for a RankingQuestion
  argilla_settings.json            the dataset's fields and question
  prompts.jsonl                    line i = the prompt of every "p<i>" id
                                   (label_import --prompts restores message
                                   prompts that a CSV shows flattened)
  samples.jsonl                    what generate wrote (when it ran)

With --thumbs, single-answer tasks instead (thumbs up or down on each
distinct completion, KTO's labels; one completion per prompt is enough):

  labelstudio_thumbs.json/.xml     Label Studio tasks + a Choices config
  thumbs.csv                       one completion per row, a "label" column
                                   to fill (up, down, or empty)
  argilla_thumbs.jsonl             Argilla records for a LabelQuestion
  argilla_thumbs_settings.json     the dataset's fields and question
  prompts.jsonl, samples.jsonl     as above

Each pair is shown left/right (A/B) in an order drawn from --seed, and each
ranking lists its completions in a drawn order, so a labeler's habit of
preferring one side cannot line up with the sampler's order. The draw is
recorded in every task (data.align / the pair_id column / metadata) and
label_import reads it back to report side bias.
"""
import argparse
import csv
import io
import itertools
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labeling as L  # noqa: E402

PROG = "label_export"

PAIRWISE_XML = """<View>
  <Header value="Which answer is better?"/>
  <Text name="prompt" value="$prompt"/>
  <Header value="Answer 1 (left)"/>
  <Text name="answer1" value="$answer1"/>
  <Header value="Answer 2 (right)"/>
  <Text name="answer2" value="$answer2"/>
  <Pairwise name="comparison" toName="answer1,answer2"
            selectionStyle="background-color: #eff7ff; box-shadow: 0 0 0 2px #1890ff;"/>
</View>
"""

# Label Studio's "LLM ranker" template: a List of items and a Ranker over it.
# No buckets: the result is one ordered list, best first.
RANKING_XML = """<View>
  <Header value="Drag the answers into order, best first"/>
  <Text name="prompt" value="$prompt"/>
  <List name="answers" value="$items" title="Answers"/>
  <Ranker name="rank" toName="answers"/>
</View>
"""


# Thumbs: one completion, a Choices tag with two values. Label Studio exports
# {"type": "choices", "value": {"choices": ["up"]}}.
THUMBS_XML = """<View>
  <Header value="Is this answer good?"/>
  <Text name="prompt" value="$prompt"/>
  <Header value="Answer"/>
  <Text name="answer" value="$answer"/>
  <Choices name="thumbs" toName="answer" choice="single-radio" showInline="true">
    <Choice value="up" alias="up" hint="a good answer"/>
    <Choice value="down" alias="down" hint="a bad answer"/>
  </Choices>
</View>
"""

THUMBS_CSV_COLUMNS = ["sample_id", "prompt", "answer", "label", "comment"]


def sample_id(g, s):
    return "p%d-s%d" % (g.index, s)


def thumbs_items(groups):
    """(group, sample id, text) for every distinct completion, in file order:
    one answer at a time has no side to be biased towards."""
    return [(g, sid, t) for g in groups for sid, t in g.samples]


def labelstudio_thumbs(items):
    tasks = []
    for g, sid, t in items:
        meta = align_meta(g)
        meta.update({"sample_id": sample_id(g, sid), "sample": sid})
        tasks.append({"data": {"prompt": L.prompt_text(g.prompt), "answer": t, "align": meta}})
    return tasks


def thumbs_csv_text(items):
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(THUMBS_CSV_COLUMNS)
    for g, sid, t in items:
        w.writerow([sample_id(g, sid), L.prompt_text(g.prompt), t, "", ""])
    return out.getvalue()


def argilla_thumbs_records(items):
    recs = []
    for g, sid, t in items:
        meta = {"prompt_index": g.index, "sample": sid}
        if not isinstance(g.prompt, str):
            meta["prompt_json"] = json.dumps(g.prompt, ensure_ascii=False)
        recs.append({"id": sample_id(g, sid), "fields": {"prompt": L.prompt_text(g.prompt), "response": t},
                     "metadata": meta})
    return recs


ARGILLA_THUMBS_SETTINGS = {
    "fields": [{"name": "prompt", "type": "text", "required": True},
               {"name": "response", "type": "text", "required": True}],
    "questions": [{"name": "label", "type": "label_selection", "required": True,
                   "title": "Is the response good?", "labels": ["good", "bad"]}],
    "metadata": [{"name": "prompt_index", "type": "integer"}, {"name": "sample", "type": "integer"}],
}


def pair_id(g, a, b):
    lo, hi = sorted((a, b))
    return "p%d-s%d-s%d" % (g.index, lo, hi)


def build(groups, seed, pairs_mode):
    """Pairs and rankings with their drawn order. One RNG stream, consumed in
    file order, so the same inputs and seed give the same files."""
    rng = random.Random(seed)
    pairs, rankings = [], []
    for g in groups:
        if len(g.samples) < 2:
            continue
        combos = list(itertools.combinations(g.samples, 2))
        if pairs_mode == "one":
            combos = [rng.choice(combos)]
        for a, b in combos:
            swapped = rng.random() < 0.5
            left, right = (b, a) if swapped else (a, b)
            pairs.append({"group": g, "id": pair_id(g, a[0], b[0]), "left": left, "right": right, "swapped": swapped})
        if len(g.samples) >= 3:
            order = list(g.samples)
            rng.shuffle(order)
            rankings.append({"group": g, "order": order})
    return pairs, rankings


def align_meta(g):
    """What goes back into prefs.jsonl beyond the displayed text: the prompt
    itself when it is a message list (a labeler sees it flattened)."""
    m = {"prompt_index": g.index}
    if not isinstance(g.prompt, str):
        m["prompt"] = g.prompt
    return m


def labelstudio_pairwise(pairs):
    tasks = []
    for p in pairs:
        g = p["group"]
        meta = align_meta(g)
        meta.update({"pair_id": p["id"], "left_sample": p["left"][0], "right_sample": p["right"][0],
                     "swapped": p["swapped"]})
        tasks.append({"data": {"prompt": L.prompt_text(g.prompt), "answer1": p["left"][1],
                               "answer2": p["right"][1], "align": meta}})
    return tasks


def labelstudio_ranking(rankings):
    tasks = []
    for r in rankings:
        g = r["group"]
        meta = align_meta(g)
        meta["order"] = [s for s, _ in r["order"]]
        items = [{"id": "s%d" % s, "title": "Answer %d" % (i + 1), "body": t} for i, (s, t) in enumerate(r["order"])]
        tasks.append({"data": {"prompt": L.prompt_text(g.prompt), "items": items, "align": meta}})
    return tasks


CSV_COLUMNS = ["pair_id", "prompt", "answer_a", "answer_b", "choice", "comment"]


def csv_text(pairs):
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")  # RFC 4180, what spreadsheets write
    w.writerow(CSV_COLUMNS)
    for p in pairs:
        pid = "p%d-s%d-s%d" % (p["group"].index, p["left"][0], p["right"][0])  # samples as shown: A, B
        w.writerow([pid, L.prompt_text(p["group"].prompt), p["left"][1], p["right"][1], "", ""])
    return out.getvalue()


def argilla_records(groups, seed):
    """One record per prompt with 2+ completions, responses in a drawn order
    (a second RNG stream: adding Argilla does not move the pair draws)."""
    rng = random.Random(seed + 1)
    recs, kmax = [], 0
    for g in groups:
        if len(g.samples) < 2:
            continue
        order = list(g.samples)
        rng.shuffle(order)
        kmax = max(kmax, len(order))
        fields = {"prompt": L.prompt_text(g.prompt)}
        for i, (_, t) in enumerate(order):
            fields["response%d" % (i + 1)] = t
        meta = {"prompt_index": g.index, "samples": ",".join(str(s) for s, _ in order)}
        if not isinstance(g.prompt, str):
            meta["prompt_json"] = json.dumps(g.prompt, ensure_ascii=False)
        recs.append({"id": "p%d" % g.index, "fields": fields, "metadata": meta})
    return recs, kmax


def argilla_settings(kmax):
    return {
        "fields": [{"name": "prompt", "type": "text", "required": True}] +
                  [{"name": "response%d" % i, "type": "text", "required": i <= 2} for i in range(1, kmax + 1)],
        "questions": [{"name": "ranking", "type": "ranking", "required": True,
                       "title": "Order the responses, best first",
                       "values": ["response%d" % i for i in range(1, kmax + 1)]}],
        "metadata": [{"name": "prompt_index", "type": "integer"}, {"name": "samples", "type": "terms"}],
    }


def export_thumbs(a, groups, n_records, prompts):
    items = thumbs_items(groups)
    d = a.out_dir
    L.write_text(os.path.join(d, "labelstudio_thumbs.json"),
                 json.dumps(labelstudio_thumbs(items), ensure_ascii=False, indent=1) + "\n")
    L.write_text(os.path.join(d, "labelstudio_thumbs.xml"), THUMBS_XML)
    L.write_text(os.path.join(d, "thumbs.csv"), thumbs_csv_text(items))
    plist = prompts if prompts is not None else [g.prompt for g in groups]
    L.write_jsonl(os.path.join(d, "prompts.jsonl"), ({"prompt": p} for p in plist))
    L.write_jsonl(os.path.join(d, "argilla_thumbs.jsonl"), argilla_thumbs_records(items))
    L.write_text(os.path.join(d, "argilla_thumbs_settings.json"), json.dumps(ARGILLA_THUMBS_SETTINGS, indent=1) + "\n")
    dups = sum(g.duplicates for g in groups)
    print("%s: %d samples of %d prompts -> %d thumbs tasks (Label Studio, CSV, Argilla); %d repeated completions "
          "merged; in %s" % (PROG, n_records, len(groups), len(items), dups, d), file=sys.stderr)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  label_export.py --prompts prompts.jsonl --model sft.ckpt --n 4 --out-dir label/\n"
               "  label_export.py --samples completions.jsonl --out-dir label/\n"
               "  label_export.py --samples label/samples.jsonl --prompts prompts.jsonl --out-dir label2/")
    src = ap.add_argument_group("samples")
    src.add_argument("--samples", metavar="FILE", help="existing samples: JSONL/.json of {prompt, completion} "
                     "records (generate's output is one); grouped by prompt")
    src.add_argument("--prompts", metavar="FILE", help="prompt records ({prompt}, {question}, {messages}); with "
                     "--model, sampled by generate; with --samples, the file generate was given, so each "
                     "sample's \"index\" restores its original prompt")
    src.add_argument("--model", metavar="M", help="policy to sample from (a .ckpt, HF dir or .gguf)")
    src.add_argument("--n", type=int, default=2, metavar="K", help="completions per prompt (default 2)")
    src.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    src.add_argument("--max-new-tokens", type=int, default=0, metavar="N", help="passed to generate")
    src.add_argument("--generate-bin", default=None, metavar="PATH",
                     help="align's generate (default: build/bin/generate beside this script's repo)")
    src.add_argument("--generate-arg", action="append", default=[], metavar="ARG",
                     help="extra argument for generate, repeatable (e.g. --generate-arg=--top-p --generate-arg=0.9)")
    ap.add_argument("--seed", type=int, default=0, help="seeds generate and the left/right draw (default 0)")
    ap.add_argument("--out-dir", required=True, metavar="DIR", help="where the files go (created)")
    ap.add_argument("--thumbs", action="store_true",
                    help="single-answer thumbs up/down tasks (KTO labels) instead of pairs and rankings")
    ap.add_argument("--pairs", choices=["all", "one"], default="all",
                    help="pairs per prompt for pairwise tasks and the CSV: every pair of distinct completions "
                         "(default) or one drawn pair")
    a = ap.parse_args(argv)

    try:
        if a.n < 2 and a.model and not a.thumbs:
            raise L.LabelError("--n %d: at least 2 completions per prompt are needed to compare" % a.n)
        if not a.samples and not (a.prompts and a.model):
            raise L.LabelError("give --samples FILE, or --prompts FILE with --model M")
        if a.samples and a.model:
            raise L.LabelError("--samples and --model exclude each other (samples are either read or generated)")
        os.makedirs(a.out_dir, exist_ok=True)
        prompts = L.read_prompts(a.prompts) if a.prompts else None
        if a.model:
            gen = a.generate_bin or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "bin",
                                                 "generate")
            samples_path = os.path.join(a.out_dir, "samples.jsonl")
            L.run_generate(gen, a.model, prompts, a.n, a.temperature, a.seed, a.max_new_tokens, a.generate_arg,
                           samples_path)
        else:
            samples_path = a.samples
        groups, n_records = L.group_samples(L.read_records(samples_path), prompts)
        if not groups:
            raise L.LabelError("%s: no samples" % samples_path)
        if a.thumbs:
            return export_thumbs(a, groups, n_records, prompts)
        pairs, rankings = build(groups, a.seed, a.pairs)
        if not pairs:
            raise L.LabelError("%s: no prompt has two distinct completions; nothing to label" % samples_path)

        d = a.out_dir
        L.write_text(os.path.join(d, "labelstudio_pairwise.json"),
                     json.dumps(labelstudio_pairwise(pairs), ensure_ascii=False, indent=1) + "\n")
        L.write_text(os.path.join(d, "labelstudio_pairwise.xml"), PAIRWISE_XML)
        for name in ("labelstudio_ranking.json", "labelstudio_ranking.xml"):
            if os.path.exists(os.path.join(d, name)):
                os.unlink(os.path.join(d, name))  # stale from an earlier run with larger k
        if rankings:
            L.write_text(os.path.join(d, "labelstudio_ranking.json"),
                         json.dumps(labelstudio_ranking(rankings), ensure_ascii=False, indent=1) + "\n")
            L.write_text(os.path.join(d, "labelstudio_ranking.xml"), RANKING_XML)
        L.write_text(os.path.join(d, "pairs.csv"), csv_text(pairs))
        # line i = prompt i (the "p<i>" of every id), for label_import --prompts
        plist = prompts if prompts is not None else [g.prompt for g in groups]
        L.write_jsonl(os.path.join(d, "prompts.jsonl"), ({"prompt": p} for p in plist))
        recs, kmax = argilla_records(groups, a.seed)
        L.write_jsonl(os.path.join(d, "argilla.jsonl"), recs)
        L.write_text(os.path.join(d, "argilla_settings.json"), json.dumps(argilla_settings(kmax), indent=1) + "\n")
    except L.LabelError as e:
        L.die(PROG, e)

    few = sum(1 for g in groups if len(g.samples) < 2)
    dups = sum(g.duplicates for g in groups)
    swapped = sum(p["swapped"] for p in pairs)
    print("%s: %d samples of %d prompts -> %d pairs (%d shown swapped), %d ranking tasks, %d Argilla records; "
          "%d repeated completions merged, %d prompts with fewer than 2 distinct completions left out; in %s"
          % (PROG, n_records, len(groups), len(pairs), swapped, len(rankings), len(recs), dups, few, a.out_dir),
          file=sys.stderr)


if __name__ == "__main__":
    main()
