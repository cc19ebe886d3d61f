#!/usr/bin/env python3
"""Preference-labeling scripts (scripts/label_export.py, label_import.py,
label_auto.py), end to end through their command lines, pairs and rankings
as well as single-answer thumbs tasks imported as KTO records.

Inputs are hand-made files in the exact shapes the tools write
(tests/fixtures/labeling/: a Label Studio JSON export with several
annotators, cancelled and empty annotations and a partial task; a ranker
export; a filled pairs.csv; Argilla 1.x and 2.x exports), plus malformed
ones made in each test. `generate` and `rm_score` are played by
fake_generate.py and fake_rm_score.py there; when ALIGN_BIN_DIR (or
build/bin) holds a built `generate`, one test also samples the tiny Llama
fixture with the real program.

Run: python3 tests/test_labeling.py   (stdlib only; last line "N passed, N failed")
"""
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPTS = os.path.join(ROOT, "scripts")
FIX = os.path.join(HERE, "fixtures", "labeling")
FAKE_GEN = os.path.join(FIX, "fake_generate.py")
FAKE_RM = os.path.join(FIX, "fake_rm_score.py")
BIN = os.environ.get("ALIGN_BIN_DIR") or os.path.join(ROOT, "build", "bin")


def fx(name):
    return os.path.join(FIX, name)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


class Base(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.t = self._tmp.name
        self.log = os.path.join(self.t, "fake.log")

    def tearDown(self):
        self._tmp.cleanup()

    def path(self, name):
        return os.path.join(self.t, name)

    def run_tool(self, tool, *args):
        env = dict(os.environ, FAKE_LOG=self.log)
        r = subprocess.run([sys.executable, os.path.join(SCRIPTS, tool + ".py")] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, env=env)
        return r.returncode, r.stdout, r.stderr

    def ok(self, tool, *args):
        rc, out, err = self.run_tool(tool, *args)
        self.assertEqual(rc, 0, "%s failed: %s" % (tool, err))
        return err

    def fails(self, tool, *args):
        """A refused run: exit 1, one line on stderr naming the tool."""
        rc, out, err = self.run_tool(tool, *args)
        self.assertEqual(rc, 1, "expected exit 1, got %d: %s" % (rc, err))
        lines = err.strip().split("\n")
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith(tool + ": "), err)
        return lines[0]

    def write(self, name, text):
        p = self.path(name)
        with open(p, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        return p

    def imp(self, *args):
        """label_import -> (records, summary)."""
        out, summ = self.path("prefs.jsonl"), self.path("summary.json")
        self.ok("label_import", *(list(args) + ["--out", out, "--summary", summ]))
        with open(summ) as f:
            return read_jsonl(out), json.load(f)


MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
P1 = "Name a prime number."
SKY = "Why is the sky blue?"


def pref(prompt, chosen, rejected):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


# ====================================================================== export


class Export(Base):
    def export(self, *args):
        d = self.path("out")
        err = self.ok("label_export", "--out-dir", d, *args)
        return d, err

    def load(self, d, name):
        with open(os.path.join(d, name), encoding="utf-8") as f:
            return json.load(f)

    def test_help(self):
        for tool in ("label_export", "label_import", "label_auto"):
            rc, out, _ = self.run_tool(tool, "--help")
            self.assertEqual(rc, 0)
            self.assertIn("--out", out)

    def test_samples_grouped_into_every_pair_of_distinct_completions(self):
        d, err = self.export("--samples", fx("samples.jsonl"))
        tasks = self.load(d, "labelstudio_pairwise.json")
        # 3 completions of P1 -> 3 pairs; 2 of the chat prompt -> 1; "1, 2, 3" twice is one
        # completion and "Only one." has one: both left out and counted
        self.assertEqual(len(tasks), 4)
        self.assertIn("1 repeated completions merged, 2 prompts with fewer than 2 distinct completions", err)
        for t in tasks:
            self.assertEqual(set(t), {"data"})
            self.assertTrue({"prompt", "answer1", "answer2", "align"} <= set(t["data"]))
            self.assertNotEqual(t["data"]["answer1"], t["data"]["answer2"])
        pairs = {frozenset((t["data"]["answer1"], t["data"]["answer2"])) for t in tasks if t["data"]["prompt"] == P1}
        self.assertEqual(pairs, {frozenset(p) for p in (("7", "9"), ("7", "Seven is prime."), ("9", "Seven is prime."))})

    def test_pairwise_config_matches_the_task_fields(self):
        d, _ = self.export("--samples", fx("samples.jsonl"))
        with open(os.path.join(d, "labelstudio_pairwise.xml")) as f:
            xml = f.read()
        self.assertIn('<Pairwise name="comparison" toName="answer1,answer2"', xml)
        for v in ("$prompt", "$answer1", "$answer2"):
            self.assertIn('value="%s"' % v, xml)

    def test_left_right_drawn_from_the_seed_and_recorded(self):
        recs = "".join(json.dumps({"prompt": "q%d" % i, "completion": c}) + "\n" for i in range(100) for c in "xy")
        samples = self.write("many.jsonl", recs)
        d, _ = self.export("--samples", samples, "--seed", "3")
        a = self.load(d, "labelstudio_pairwise.json")
        swapped = 0
        for t in a:
            m = t["data"]["align"]
            # sample 0 is "x", sample 1 is "y": what is shown left is what the record says
            self.assertEqual(t["data"]["answer1"], "xy"[m["left_sample"]])
            self.assertEqual(m["swapped"], m["left_sample"] > m["right_sample"])
            swapped += m["swapped"]
        self.assertTrue(30 <= swapped <= 70, "%d of 100 swapped" % swapped)  # binomial(100, .5): 5 sigma
        d2 = self.path("again")
        self.ok("label_export", "--samples", samples, "--seed", "3", "--out-dir", d2)
        self.assertEqual(a, self.load(d2, "labelstudio_pairwise.json"))
        d3 = self.path("other")
        self.ok("label_export", "--samples", samples, "--seed", "4", "--out-dir", d3)
        self.assertNotEqual(a, self.load(d3, "labelstudio_pairwise.json"))

    def test_ranking_tasks_only_for_three_or_more_completions(self):
        d, _ = self.export("--samples", fx("samples.jsonl"))
        r = self.load(d, "labelstudio_ranking.json")
        self.assertEqual(len(r), 1)
        data = r[0]["data"]
        self.assertEqual(data["prompt"], P1)
        self.assertEqual(sorted(i["body"] for i in data["items"]), ["7", "9", "Seven is prime."])
        self.assertEqual([i["id"] for i in data["items"]], ["s%d" % s for s in data["align"]["order"]])
        with open(os.path.join(d, "labelstudio_ranking.xml")) as f:
            xml = f.read()
        self.assertIn('<List name="answers" value="$items"', xml)
        self.assertIn('<Ranker name="rank" toName="answers"', xml)
        two = self.write("two.jsonl", '{"prompt": "a", "completion": "x"}\n{"prompt": "a", "completion": "y"}\n')
        self.ok("label_export", "--samples", two, "--out-dir", d)
        self.assertFalse(os.path.exists(os.path.join(d, "labelstudio_ranking.json")), "stale ranking file kept")

    def test_csv_has_a_choice_column_and_survives_newlines_and_quotes(self):
        d, _ = self.export("--samples", fx("samples.jsonl"))
        with open(os.path.join(d, "pairs.csv"), encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(list(rows[0]), ["pair_id", "prompt", "answer_a", "answer_b", "choice", "comment"])
        self.assertEqual(len(rows), 4)
        chat = [r for r in rows if r["pair_id"].startswith("p1-")][0]
        self.assertEqual(chat["prompt"], 'user: Say hi,\nthen "bye".')
        self.assertEqual({chat["answer_a"], chat["answer_b"]}, {"hi\nbye", 'Hi, "bye"!'})
        left = int(chat["pair_id"].split("-")[1][1:])
        self.assertEqual(chat["answer_a"], ["hi\nbye", 'Hi, "bye"!'][left])

    def test_argilla_records_and_settings(self):
        d, _ = self.export("--samples", fx("samples.jsonl"))
        recs = read_jsonl(os.path.join(d, "argilla.jsonl"))
        self.assertEqual([r["id"] for r in recs], ["p0", "p1"])
        self.assertEqual(sorted(recs[0]["fields"]), ["prompt", "response1", "response2", "response3"])
        order = [int(s) for s in recs[0]["metadata"]["samples"].split(",")]
        texts = ["7", "Seven is prime.", "9"]
        self.assertEqual([recs[0]["fields"]["response%d" % (i + 1)] for i in range(3)], [texts[s] for s in order])
        self.assertEqual(json.loads(recs[1]["metadata"]["prompt_json"]), [{"role": "user", "content": 'Say hi,\nthen "bye".'}])
        st = self.load(d, "argilla_settings.json")
        self.assertEqual(st["questions"][0]["type"], "ranking")
        self.assertEqual(st["questions"][0]["values"], ["response1", "response2", "response3"])

    def test_generate_is_run_with_the_sampling_flags_and_original_prompts_kept(self):
        d, err = self.export("--prompts", fx("prompts.jsonl"), "--model", "m.ckpt", "--n", "3", "--temperature", "0.7",
                             "--seed", "11", "--max-new-tokens", "32", "--generate-bin", FAKE_GEN,
                             "--generate-arg=--top-p", "--generate-arg=0.9")
        argv = read_jsonl(self.log)[0]
        for flag, v in (("--model", "m.ckpt"), ("--n", "3"), ("--temperature", "0.7"), ("--seed", "11"),
                        ("--max-new-tokens", "32"), ("--top-p", "0.9")):
            self.assertEqual(argv[argv.index(flag) + 1], v, argv)
        self.assertEqual(len(read_jsonl(os.path.join(d, "samples.jsonl"))), 9)
        tasks = self.load(d, "labelstudio_pairwise.json")
        # generate's "prompt" is the rendered template; the tasks keep the prompt records' own
        self.assertFalse(any("<|user|>" in t["data"]["prompt"] for t in tasks))
        chat = [t for t in tasks if t["data"]["align"]["prompt_index"] == 1]
        self.assertEqual(chat[0]["data"]["align"]["prompt"], MSGS)
        self.assertEqual(chat[0]["data"]["prompt"], "system: Be brief.\n\nuser: What is 2+2?")
        # prompt 2's two last samples repeat its first: 2 distinct of 3, one pair
        self.assertEqual(len([t for t in tasks if t["data"]["align"]["prompt_index"] == 2]), 1)
        self.assertEqual(read_jsonl(os.path.join(d, "prompts.jsonl"))[1]["prompt"], MSGS)

    def test_generate_output_mapped_back_by_index(self):
        d, _ = self.export("--prompts", fx("prompts.jsonl"), "--model", "m", "--n", "2", "--generate-bin", FAKE_GEN)
        d2 = self.path("from_samples")
        self.ok("label_export", "--samples", os.path.join(d, "samples.jsonl"), "--prompts", fx("prompts.jsonl"),
                "--out-dir", d2)
        self.assertEqual(self.load(d, "labelstudio_pairwise.json"), self.load(d2, "labelstudio_pairwise.json"))

    def test_generate_failure_is_reported(self):
        msg = self.fails("label_export", "--prompts", fx("prompts.jsonl"), "--model", "fail", "--generate-bin",
                         FAKE_GEN, "--out-dir", self.path("o"))
        self.assertIn("generate failed (exit 1): generate: --model fail", msg)
        msg = self.fails("label_export", "--prompts", fx("prompts.jsonl"), "--model", "m", "--generate-bin",
                         self.path("nope"), "--out-dir", self.path("o"))
        self.assertIn("--generate-bin", msg)

    def test_bad_sample_and_prompt_lines_are_named(self):
        bad = self.write("s.jsonl", '{"prompt": "a", "completion": "x"}\n\n{"prompt": "a"}\n')
        self.assertIn("s.jsonl:3: missing string field \"completion\"",
                      self.fails("label_export", "--samples", bad, "--out-dir", self.path("o")))
        bad = self.write("s2.jsonl", '{"prompt": "a", "completion": "x"}\n{"prompt": "a", "completion": "y"\n')
        self.assertIn("s2.jsonl:2: invalid JSON", self.fails("label_export", "--samples", bad, "--out-dir", self.path("o")))
        bad = self.write("p.jsonl", '{"prompt": "a"}\n{"text": "b"}\n')
        self.assertIn("p.jsonl:2: no prompt", self.fails("label_export", "--prompts", bad, "--model", "m", "--generate-bin",
                                                         FAKE_GEN, "--out-dir", self.path("o")))
        one = self.write("one.jsonl", '{"prompt": "a", "completion": "x"}\n{"prompt": "a", "completion": "x"}\n')
        self.assertIn("nothing to label", self.fails("label_export", "--samples", one, "--out-dir", self.path("o")))

    def test_real_generate_on_the_tiny_llama(self):
        gen = os.path.join(BIN, "generate")
        model = os.path.join(HERE, "fixtures", "hf_tiny_llama")
        if not (os.access(gen, os.X_OK) and os.path.isdir(model)):
            self.skipTest("no built generate in %s" % BIN)
        d, _ = self.export("--prompts", fx("prompts.jsonl"), "--model", model, "--n", "3", "--max-new-tokens", "6",
                           "--seed", "1", "--generate-bin", gen)
        samples = read_jsonl(os.path.join(d, "samples.jsonl"))
        self.assertEqual(len(samples), 9)
        self.assertTrue(all({"index", "sample", "prompt", "completion"} <= set(s) for s in samples))
        tasks = self.load(d, "labelstudio_pairwise.json")
        self.assertTrue(tasks)
        self.assertFalse(any("<|" in t["data"]["prompt"] for t in tasks), "template markup leaked into the prompt")


# ====================================================================== import


class ImportLabelStudio(Base):
    def test_pairwise_majority(self):
        recs, s = self.imp(fx("ls_pairwise_export.json"))
        self.assertEqual(recs, [
            pref(P1, "7", "9"),                       # tasks 101 and 109: the same pair, two annotators agree
            pref(P1, "Seven is prime.", "9"),         # right, twice
            pref(SKY, "Rayleigh scattering.", "Because it reflects the sea."),  # 2 left vs 1 right
            pref(MSGS, "Four, since 2+2=4.", "4"),    # the message prompt from data.align.prompt
        ])
        self.assertEqual((s["kept"], s["kept_disagreed"], s["tied"], s["conflicting"], s["unlabeled"]), (4, 1, 1, 2, 3))
        self.assertEqual((s["tasks"], s["annotations"], s["cancelled"], s["no_result"]), (9, 12, 1, 1))
        self.assertEqual((s["left"], s["right"]), (4, 6))

    def test_pairwise_drop_removes_every_disagreement(self):
        recs, s = self.imp(fx("ls_pairwise_export.json"), "--resolve", "drop")
        self.assertEqual(len(recs), 3)
        self.assertNotIn(SKY, [r["prompt"] for r in recs])
        self.assertEqual((s["kept"], s["tied"], s["conflicting_dropped"], s["unlabeled"]), (3, 0, 2, 3))

    def test_every_pair_is_counted_once(self):
        _, s = self.imp(fx("ls_pairwise_export.json"))
        with open(fx("ls_pairwise_export.json")) as f:
            tasks = json.load(f)
        pairs = {(t["data"]["prompt"], frozenset((t["data"]["answer1"], t["data"]["answer2"]))) for t in tasks}
        self.assertEqual(s["kept"] + s["tied"] + s["conflicting_dropped"] + s["unlabeled"] + s["unusable"], len(pairs))

    def test_ranking_best_vs_worst(self):
        recs, s = self.imp(fx("ls_ranking_export.json"))
        self.assertEqual(recs, [pref(P1, "Seven is prime.", "9"), pref(SKY, "Rayleigh scattering.", "It just is.")])
        self.assertEqual((s["kept"], s["unlabeled"], s["cancelled"]), (2, 1, 1))

    def test_ranking_all_ordered_pairs(self):
        recs, s = self.imp(fx("ls_ranking_export.json"), "--ranking-pairs", "all")
        order = ["Seven is prime.", "Two.", "7", "9"]
        want = [pref(P1, order[i], order[j]) for i in range(4) for j in range(i + 1, 4)]
        self.assertEqual(sorted(map(json.dumps, recs[:6])), sorted(map(json.dumps, want)))
        # the two annotators of task 201 disagree on s0 vs s1: one vote each, a tie
        self.assertEqual(recs[6:], [pref(SKY, "Rayleigh scattering.", "It just is."),
                                    pref(SKY, "Blue light scatters more.", "It just is.")])
        self.assertEqual((s["kept"], s["tied"], s["conflicting"]), (8, 1, 1))

    def test_the_same_export_twice_does_not_double_votes(self):
        recs, s = self.imp(fx("ls_pairwise_export.json"), fx("ls_pairwise_export.json"))
        self.assertEqual(len(recs), 4)
        self.assertEqual(s["votes_replaced"], 10)

    def test_unknown_selection_names_task_and_id(self):
        with open(fx("ls_pairwise_export.json")) as f:
            tasks = json.load(f)
        tasks[2]["annotations"][1]["result"][0]["value"]["selected"] = "middle"
        p = self.write("bad.json", json.dumps(tasks))
        msg = self.fails("label_import", p, "--out", self.path("o.jsonl"))
        self.assertIn('bad.json: task 2 (id 103): annotation 1: pairwise value.selected is "middle"', msg)
        self.assertFalse(os.path.exists(self.path("o.jsonl")), "a refused import wrote output")

    def test_skip_bad_counts_and_goes_on(self):
        with open(fx("ls_pairwise_export.json")) as f:
            tasks = json.load(f)
        del tasks[2]["annotations"][0]["result"][0]["value"]["selected"]
        tasks[5] = {"id": 106, "data": {"prompt": "x", "answer1": 7}, "annotations": []}
        p = self.write("bad.json", json.dumps(tasks))
        recs, s = self.imp(p, "--skip-bad")
        self.assertEqual(s["bad_skipped"], 2)
        self.assertIn("task 2 (id 103)", s["first_bad"])
        self.assertEqual(len(recs), 3)

    def test_jsonl_json_min_and_truncated_exports_are_refused(self):
        p = self.write("lines.json", json.dumps({"id": 1, "data": {}, "annotations": []}) + "\n")
        self.assertIn("one JSON array of tasks, not JSON Lines", self.fails("label_import", p, "--out", self.path("o")))
        p = self.write("min.json", json.dumps([{"id": 4, "prompt": "q", "answer1": "a", "answer2": "b",
                                                "comparison": {"selected": "left"}, "annotator": 1}]))
        self.assertIn("min.json: task 0 (id 4): no \"data\" object", self.fails("label_import", p, "--format", "labelstudio",
                                                                              "--out", self.path("o")))
        with open(fx("ls_pairwise_export.json")) as f:
            text = f.read()
        p = self.write("cut.json", text[:len(text) // 2])
        self.assertRegex(self.fails("label_import", p, "--out", self.path("o")), r"cut\.json:\d+: invalid JSON")

    def test_ranker_with_several_buckets_or_unknown_ids_is_refused(self):
        with open(fx("ls_ranking_export.json")) as f:
            tasks = json.load(f)
        tasks[1]["annotations"][0]["result"][0]["value"]["ranker"] = {"best": ["s0"], "worst": ["s2"]}
        msg = self.fails("label_import", self.write("b.json", json.dumps(tasks)), "--out", self.path("o"))
        self.assertIn("task 1 (id 201): annotation 0: the ranker result uses 2 buckets", msg)
        tasks[1]["annotations"][0]["result"][0]["value"]["ranker"] = ["s0", "s9"]
        msg = self.fails("label_import", self.write("b.json", json.dumps(tasks)), "--out", self.path("o"))
        self.assertIn('ranked id "s9" is not in data.items', msg)

    def test_nothing_labelled_is_an_error_with_the_counts(self):
        with open(fx("ls_pairwise_export.json")) as f:
            tasks = json.load(f)
        for t in tasks:
            t["annotations"] = []
        msg = self.fails("label_import", self.write("none.json", json.dumps(tasks)), "--out", self.path("o"))
        self.assertIn("no preference pairs", msg)
        self.assertIn("8 unlabeled", msg)


class ImportCSV(Base):
    def test_filled_csv(self):
        recs, s = self.imp(fx("pairs_filled.csv"))
        self.assertEqual(recs, [
            pref(P1, "7", "9"),
            pref(P1, "Seven is prime.", "9"),
            pref("system: Be brief.\n\nuser: What is 2+2?", "4", "Four, since 2+2=4."),
            pref("Write two lines.", "roses are red,\nviolets are blue", 'a line\nanother, "quoted"'),
        ])
        self.assertEqual((s["kept"], s["tied"], s["unlabeled"], s["tie_votes"]), (4, 1, 1, 1))

    def test_prompts_file_restores_message_prompts(self):
        rows = 'pair_id,prompt,answer_a,answer_b,choice\r\np1-s1-s0,"system: Be brief.\n\nuser: What is 2+2?",long,4,b\r\n'
        recs, _ = self.imp(self.write("c.csv", rows), "--prompts", fx("prompts.jsonl"))
        self.assertEqual(recs, [pref(MSGS, "4", "long")])
        rows = rows.replace("p1-", "p0-")
        msg = self.fails("label_import", self.write("c.csv", rows), "--prompts", fx("prompts.jsonl"), "--out", self.path("o"))
        self.assertIn("c.csv: row 1 (line 2): the prompt differs from prompt 0", msg)

    def test_two_annotators_files_pool_and_disagreements_resolve(self):
        head = "pair_id,prompt,answer_a,answer_b,choice\n"
        alice = self.write("alice.csv", head + "p0-s0-s1,q,x,y,A\np0-s0-s2,q,x,z,A\np0-s1-s2,q,y,z,B\n")
        bob = self.write("bob.csv", head + "p0-s0-s1,q,x,y,A\np0-s0-s2,q,x,z,B\np0-s1-s2,q,y,z,tie\n")
        recs, s = self.imp(alice, bob)
        self.assertEqual(recs, [pref("q", "x", "y")])
        self.assertEqual((s["kept"], s["tied"], s["conflicting"]), (1, 2, 2))
        carol = self.write("carol.csv", head + "p0-s0-s2,q,z,x,A\n")  # shown the other way round
        recs, s = self.imp(alice, bob, carol)
        self.assertEqual(recs, [pref("q", "x", "y"), pref("q", "z", "x")])  # x vs z: 2 votes to 1
        self.assertEqual(s["kept_disagreed"], 1)

    def test_several_choice_columns_and_semicolons(self):
        p = self.write("sc.csv", "prompt;Answer A;Answer B;choice_ann1;choice_ann2\nq;x;y;a;B\nq;x;z;A;left\n")
        recs, s = self.imp(p, "--resolve", "drop")
        self.assertEqual(recs, [pref("q", "x", "z")])
        self.assertEqual(s["conflicting_dropped"], 1)

    def test_bad_choice_names_row_and_line(self):
        p = self.write("bad.csv", 'prompt,answer_a,answer_b,choice\n"two\nlines",x,y,A\nq,x,y,C\n')
        msg = self.fails("label_import", p, "--out", self.path("o"))
        self.assertIn('bad.csv: row 2 (line 4): column "choice": "C" is not A, B, tie or empty', msg)

    def test_missing_columns_are_named(self):
        p = self.write("bad.csv", "prompt,first,second,choice\nq,x,y,A\n")
        msg = self.fails("label_import", p, "--out", self.path("o"))
        self.assertIn("bad.csv: line 1: the header lacks answer_a, answer_b", msg)

    def test_identical_and_empty_answers_are_counted_not_written(self):
        p = self.write("c.csv", "prompt,answer_a,answer_b,choice\nq,x,x,A\nq,,y,B\nq,x,y,A\n")
        recs, s = self.imp(p)
        self.assertEqual(recs, [pref("q", "x", "y")])
        self.assertEqual(s["unusable"], 2)


class ImportArgilla(Base):
    def test_argilla_1x_ranks_ties_discarded_and_drafts(self):
        recs, s = self.imp(fx("argilla_v1_export.jsonl"))
        self.assertEqual(recs, [
            pref(P1, "Seven is prime.", "9"),
            pref(MSGS, "4", "Four, since 2+2=4."),          # prompt from metadata.prompt_json; the discarded vote ignored
            pref(SKY, "Rayleigh scattering.", "It just is."),  # rank 1 shared by two responses
        ])
        self.assertEqual((s["cancelled"], s["drafts"], s["unlabeled"]), (1, 1, 2))

    def test_argilla_2x_nested_and_flattened(self):
        recs, s = self.imp(fx("argilla_v2_export.json"), fx("argilla_v2_flat.jsonl"))
        self.assertEqual(recs, [
            pref(P1, "Seven is prime.", "9"),   # Borda over both annotators: 9 last for both
            pref(SKY, "Rayleigh scattering.", "It just is."),
            pref(P1, "7", "9"),
        ])
        self.assertEqual(s["unlabeled"], 1)

    def test_argilla_all_pairs(self):
        recs, s = self.imp(fx("argilla_v2_export.json"), "--ranking-pairs", "all")
        # p0: annotators disagree on "Seven is prime." vs "7" (tied), agree on both against "9"
        self.assertEqual(len(recs), 3)
        self.assertEqual((s["tied"], s["conflicting"]), (1, 1))

    def test_ranked_name_not_a_field_names_line_and_id(self):
        with open(fx("argilla_v1_export.jsonl")) as f:
            lines = f.read().split("\n")
        rec = json.loads(lines[2])
        rec["responses"][0]["values"]["ranking"]["value"][0]["value"] = "response7"
        lines[2] = json.dumps(rec)
        p = self.write("ag.jsonl", "\n".join(lines))
        msg = self.fails("label_import", p, "--out", self.path("o"))
        self.assertRegex(msg, r'ag\.jsonl:3 \(id p2\): response of [0-9a-f-]+: ranked "response7" is not a field')

    def test_wrong_question_name_lists_the_questions(self):
        msg = self.fails("label_import", fx("argilla_v2_export.json"), "--question", "preference", "--out", self.path("o"))
        self.assertIn('element 0 (id p0): no responses to question "preference" (questions: ranking', msg)


# ====================================================================== round trip


class RoundTrip(Base):
    def test_export_label_in_a_spreadsheet_import(self):
        d = self.path("label")
        self.ok("label_export", "--prompts", fx("prompts.jsonl"), "--model", "m", "--n", "3", "--generate-bin", FAKE_GEN,
                "--out-dir", d, "--seed", "5")
        # the labeler prefers the longer answer (more "!"; then the later in order), whichever side it is on
        with open(os.path.join(d, "pairs.csv"), encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        for r in rows[1:]:
            r[4] = "A" if (len(r[2]), r[2]) > (len(r[3]), r[3]) else "B"
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\r\n").writerows(rows)
        filled = self.write("filled.csv", buf.getvalue())
        recs, s = self.imp(filled, "--prompts", os.path.join(d, "prompts.jsonl"))
        self.assertEqual(s["kept"], len(rows) - 1)
        for r in recs:
            self.assertGreater((len(r["chosen"]), r["chosen"]), (len(r["rejected"]), r["rejected"]))
        self.assertIn(MSGS, [r["prompt"] for r in recs])
        self.assertTrue(0 < s["left"] < len(recs), "the drawn sides put the longer answer on both sides")

    def test_export_label_in_label_studio_import(self):
        d = self.path("label")
        self.ok("label_export", "--samples", fx("samples.jsonl"), "--out-dir", d)
        with open(os.path.join(d, "labelstudio_pairwise.json")) as f:
            tasks = json.load(f)
        # what Label Studio exports after one annotator picks the shorter answer (then the earlier)
        for i, t in enumerate(tasks):
            t["id"] = 500 + i
            a1, a2 = t["data"]["answer1"], t["data"]["answer2"]
            short = "left" if (len(a1), a1) < (len(a2), a2) else "right"
            t["annotations"] = [{"id": 900 + i, "completed_by": 2, "was_cancelled": False, "result": [
                {"id": "r%d" % i, "from_name": "comparison", "to_name": "comparison", "type": "pairwise",
                 "value": {"selected": short}, "origin": "manual"}]}]
        recs, s = self.imp(self.write("export.json", json.dumps(tasks)))
        self.assertEqual(s["kept"], len(tasks))
        for r in recs:
            self.assertLess((len(r["chosen"]), r["chosen"]), (len(r["rejected"]), r["rejected"]))
        self.assertIn([{"role": "user", "content": 'Say hi,\nthen "bye".'}], [r["prompt"] for r in recs])


    def test_dpo_run_trains_on_imported_pairs(self):
        dpo = os.path.join(BIN, "dpo_run")
        model = os.path.join(HERE, "fixtures", "hf_tiny_llama")
        if not (os.access(dpo, os.X_OK) and os.path.isdir(model)):
            self.skipTest("no built dpo_run in %s" % BIN)
        recs, _ = self.imp(fx("ls_pairwise_export.json"), fx("pairs_filled.csv"), fx("argilla_v1_export.jsonl"))
        r = subprocess.run([dpo, "--policy", model, "--data", self.path("prefs.jsonl"), "--out", self.path("o.ckpt"),
                            "--max-steps", "1", "--batch-size", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("%d examples" % len(recs), r.stderr)  # every record read, message prompts included


# ====================================================================== thumbs (KTO)


class Thumbs(Base):
    """Single-answer thumbs tasks: label_export --thumbs, label_import -> KTO records."""

    def export(self):
        d = self.path("th")
        err = self.ok("label_export", "--samples", fx("samples.jsonl"), "--thumbs", "--out-dir", d)
        return d, err

    def test_export_one_task_per_distinct_completion(self):
        d, err = self.export()
        with open(os.path.join(d, "labelstudio_thumbs.json")) as f:
            tasks = json.load(f)
        # samples.jsonl: 3 + 2 + 1 (repeated twice) + 1 distinct completions; one each is enough here
        self.assertEqual(len(tasks), 7)
        self.assertIn("7 thumbs tasks", err)
        self.assertEqual(set(tasks[0]["data"]), {"prompt", "answer", "align"})
        self.assertEqual(tasks[0]["data"]["align"]["sample_id"], "p0-s0")
        with open(os.path.join(d, "labelstudio_thumbs.xml")) as f:
            xml = f.read()
        self.assertIn('<Choices name="thumbs" toName="answer"', xml)
        self.assertIn('<Choice value="up"', xml)
        with open(os.path.join(d, "thumbs.csv"), encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        self.assertEqual(rows[0], ["sample_id", "prompt", "answer", "label", "comment"])
        self.assertEqual(len(rows), 8)
        recs = read_jsonl(os.path.join(d, "argilla_thumbs.jsonl"))
        self.assertEqual(set(recs[0]["fields"]), {"prompt", "response"})
        with open(os.path.join(d, "argilla_thumbs_settings.json")) as f:
            q = json.load(f)["questions"][0]
        self.assertEqual((q["name"], q["labels"]), ("label", ["good", "bad"]))
        self.assertFalse(os.path.exists(os.path.join(d, "labelstudio_pairwise.json")))

    def ls_labelled(self, d, who, pick):
        with open(os.path.join(d, "labelstudio_thumbs.json")) as f:
            tasks = json.load(f)
        for i, t in enumerate(tasks):
            t["id"] = 700 + i
            ch = pick(t["data"]["answer"])
            res = [] if ch is None else [{"from_name": "thumbs", "to_name": "answer", "type": "choices",
                                          "value": {"choices": [ch]}}]
            t["annotations"] = [{"id": 1, "completed_by": who, "was_cancelled": False, "result": res}]
        return self.write("ls_%s.json" % who, json.dumps(tasks))

    def csv_labelled(self, d, pick, bob=None):
        with open(os.path.join(d, "thumbs.csv"), encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        if bob:
            rows[0].append("label_bob")
        for r in rows[1:]:
            r[3] = pick(r[2]) or ""
            if bob:
                r.append(bob(r[2]) or "")
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\r\n").writerows(rows)
        return self.write("filled.csv", buf.getvalue())

    def test_label_studio_csv_and_argilla_votes_pool_into_kto_records(self):
        d, _ = self.export()
        long_up = lambda t: "up" if len(t) > 3 else "down"
        ls = self.ls_labelled(d, 3, long_up)
        # the sheet's two labelers: one agrees with Label Studio's, one says down to "Seven is prime."
        sheet = self.csv_labelled(d, long_up, bob=lambda t: "down" if t == "Seven is prime." else None)
        ag = [json.loads(l) for l in open(os.path.join(d, "argilla_thumbs.jsonl"), encoding="utf-8")]
        for r in ag:  # Argilla 2.x nested: one more "down" on "Seven is prime." makes it 2 up, 2 down: tied
            v = "bad" if r["fields"]["response"] == "Seven is prime." else None
            r["responses"] = {"label": [{"value": v, "user_id": "u9"}]} if v else {}
        agf = self.write("ag.jsonl", "\n".join(json.dumps(r) for r in ag) + "\n")
        recs, s = self.imp(ls, sheet, agf, "--prompts", os.path.join(d, "prompts.jsonl"))
        by = {(json.dumps(r["prompt"]), r["completion"]): r["label"] for r in recs}
        self.assertTrue(all(set(r) == {"prompt", "completion", "label"} for r in recs))
        self.assertEqual(by[(json.dumps(P1), "7")], False)
        self.assertEqual(by[(json.dumps("Only one."), "alone")], True)
        self.assertNotIn((json.dumps(P1), "Seven is prime."), by)  # 2 up, 2 down: tied, counted
        self.assertEqual(s["tied"], 1)
        self.assertIn([{"role": "user", "content": 'Say hi,\nthen "bye".'}], [r["prompt"] for r in recs])
        self.assertEqual((s["kept_desirable"], s["kept_undesirable"]), (4, 2))
        self.assertEqual(s["kept"], 0)  # no pairs

    def test_drop_removes_disagreements(self):
        d, _ = self.export()
        sheet = self.csv_labelled(d, lambda t: "good", bob=lambda t: "bad" if t == "9" else "yes")
        recs, s = self.imp(sheet, "--resolve", "drop")
        self.assertEqual(len(recs), 6)
        self.assertEqual(s["conflicting_dropped"], 1)

    def test_argilla_1x_thumbs(self):
        rec = {"id": "p0-s1", "fields": {"prompt": P1, "response": "Seven is prime."}, "metadata": {},
               "responses": [{"user_id": "a", "values": {"label": {"value": "good"}}, "status": "submitted"},
                             {"user_id": "b", "values": {"label": {"value": "good"}}, "status": "discarded"}]}
        recs, s = self.imp(self.write("a1.jsonl", json.dumps(rec) + "\n"))
        self.assertEqual(recs, [{"prompt": P1, "completion": "Seven is prime.", "label": True}])
        self.assertEqual(s["cancelled"], 1)

    def test_bad_labels_are_named(self):
        d, _ = self.export()
        sheet = self.csv_labelled(d, lambda t: "maybe" if t == "9" else "up")
        msg = self.fails("label_import", sheet, "--out", self.path("o.jsonl"))
        self.assertIn('filled.csv: row 3 (line 4): column "label": "maybe" is not up, down', msg)
        ls = self.ls_labelled(d, 1, lambda t: "sideways")
        msg = self.fails("label_import", ls, "--out", self.path("o.jsonl"))
        self.assertIn("task 0 (id 700): annotation 0: choice: \"sideways\" is not up, down", msg)

    def test_pairs_and_thumbs_in_one_import(self):
        d, _ = self.export()
        recs, s = self.imp(fx("ls_pairwise_export.json"), self.ls_labelled(d, 3, lambda t: "up"))
        kinds = {tuple(sorted(r)) for r in recs}
        self.assertEqual(kinds, {("chosen", "prompt", "rejected"), ("completion", "label", "prompt")})
        self.assertGreater(s["kept"], 0)

    def test_kto_run_trains_on_imported_thumbs(self):
        kto = os.path.join(BIN, "kto_run")
        model = os.path.join(HERE, "fixtures", "hf_tiny_llama")
        if not (os.access(kto, os.X_OK) and os.path.isdir(model)):
            self.skipTest("no built kto_run in %s" % BIN)
        d, _ = self.export()
        recs, _ = self.imp(self.ls_labelled(d, 3, lambda t: "up" if len(t) > 3 else "down"))
        r = subprocess.run([kto, "--policy", model, "--data", self.path("prefs.jsonl"), "--out", self.path("o.ckpt"),
                            "--max-steps", "1", "--batch-size", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        up = sum(1 for x in recs if x["label"])
        self.assertIn("KTO on %d desirable and %d undesirable examples" % (up, len(recs) - up), r.stderr)


# ====================================================================== auto


class Auto(Base):
    def auto(self, *args):
        out = self.path("prefs.jsonl")
        err = self.ok("label_auto", "--rm-score-bin", FAKE_RM, "--out", out, *args)
        return read_jsonl(out), err

    def test_best_vs_worst_with_margin(self):
        recs, err = self.auto("--samples", fx("samples.jsonl"), "--reward", "rm.ckpt")
        # fake score = len(completion) / 4
        self.assertEqual(recs, [
            dict(pref(P1, "Seven is prime.", "7"), margin=3.5, score_chosen=3.75, score_rejected=0.25),
            dict(pref([{"role": "user", "content": 'Say hi,\nthen "bye".'}], 'Hi, "bye"!', "hi\nbye"), margin=1.0,
                 score_chosen=2.5, score_rejected=1.5),
        ])
        self.assertIn("2 prompts with fewer than 2 distinct completions left out", err)

    def test_all_pairs_skip_equal_scores(self):
        recs, err = self.auto("--samples", fx("samples.jsonl"), "--reward", "rm", "--pairs", "all")
        self.assertEqual(len(recs), 3)  # "7" and "9" score the same: a tie, counted
        self.assertIn("1 ties below --min-margin", err)
        for r in recs:
            self.assertAlmostEqual(r["margin"], r["score_chosen"] - r["score_rejected"])
            self.assertGreater(r["margin"], 0)

    def test_min_margin(self):
        recs, err = self.auto("--samples", fx("samples.jsonl"), "--reward", "rm", "--min-margin", "2")
        self.assertEqual([r["chosen"] for r in recs], ["Seven is prime."])
        self.assertIn("1 ties below --min-margin", err)

    def test_rm_score_gets_original_prompts_and_the_endpoint(self):
        self.auto("--prompts", fx("prompts.jsonl"), "--model", "pol", "--n", "3", "--generate-bin", FAKE_GEN,
                  "--reward-connect", "tcp://127.0.0.1:5555")
        logs = read_jsonl(self.log)
        gen, rm = logs[0], logs[1]
        self.assertIn("pol", gen)
        self.assertEqual(rm["argv"][:2], ["--connect", "tcp://127.0.0.1:5555"])
        self.assertEqual(rm["records"][3]["prompt"], MSGS)
        self.assertEqual(len(rm["records"]), 8)  # 9 samples, prompt 2 repeats one
        self.assertTrue(all(set(r) == {"prompt", "completion"} for r in rm["records"]))

    def test_scores_out(self):
        out = self.path("scores.jsonl")
        self.auto("--samples", fx("samples.jsonl"), "--reward", "rm", "--scores-out", out)
        sc = read_jsonl(out)
        self.assertEqual(len(sc), 5)
        self.assertEqual(sc[1], {"prompt": P1, "completion": "Seven is prime.", "sample": 1, "score": 3.75})

    def test_rm_score_failures_are_reported(self):
        base = ["--samples", fx("samples.jsonl"), "--rm-score-bin", FAKE_RM, "--out", self.path("o")]
        self.assertIn("rm_score failed (exit 2): rm_score: --model fail: not a reward model",
                      self.fails("label_auto", *(base + ["--reward", "fail"])))
        self.assertIn("rm_score wrote 4 scores for 5 records", self.fails("label_auto", *(base + ["--reward", "short"])))
        self.assertIn('rm_score output line 2: no numeric "score"', self.fails("label_auto", *(base + ["--reward", "nan"])))
        self.assertIn("one of --reward RM or --reward-connect EP", self.fails("label_auto", *base))
        self.assertFalse(os.path.exists(self.path("o")))


def main():
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    res = unittest.TextTestRunner(verbosity=2 if "-v" in sys.argv else 1).run(suite)
    failed = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses)
    if res.skipped:
        for t, why in res.skipped:
            print("skipped: %s (%s)" % (t.id(), why))
    print("%d passed, %d failed" % (res.testsRun - failed - len(res.skipped), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
