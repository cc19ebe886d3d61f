#!/usr/bin/env python3
"""label_import: people's choices -> prefs.jsonl for rm_train and dpo_run.

Reads, in any mix (the format is told by each file's content):

  Label Studio JSON export   a list of tasks {id, data, annotations: [{id,
                             completed_by, result, was_cancelled}]}; pairwise
                             results {"type": "pairwise", "value": {"selected":
                             "left"|"right"}} (left = answer1, the first name
                             in toName) and ranker results {"type": "ranker",
                             "value": {"ranker": [ids best first]}} (or one
                             bucket {"ranker": {"_": [ids]}}) over data.items
  a filled pairs.csv         columns prompt, answer_a, answer_b and one or more
                             choice columns (choice, choice_ann2, ...): A, B,
                             tie, or empty for no preference
  Argilla export             JSONL or JSON records with fields and the
                             responses to a RankingQuestion, as Argilla 1.x
                             ([{user_id, values: {Q: {value: [{value, rank}]}},
                             status}]) or 2.x ({Q: [{value: [names best first],
                             user_id}]}, or flattened "Q.responses") writes them

and writes TRL's explicit-prompt format, one {"prompt", "chosen",
"rejected"} per line.

Single-answer thumbs tasks (label_export --thumbs) are read from the same
three tools: Label Studio tasks with data.answer and a choices result
{"type": "choices", "value": {"choices": ["up"|"down"]}}, a filled
thumbs.csv (columns prompt, answer and one or more label columns: up,
down, or empty), Argilla records with one response field and a
LabelQuestion (--label-question, default "label": good or bad). Their
votes pool by (prompt, text) and resolve like pairs, and each labelled
completion is written as TRL's unpaired KTO record {"prompt",
"completion", "label": true|false}; kto_run (dpo_run --loss kto) reads
them, and the pairs of a mixed import, from the same file.

Votes on the same pair pool across tasks and files (the same prompt and
the same two texts), one vote per annotator. A cancelled or skipped task,
an annotation without a result, a draft or an empty choice is no vote. A
pair with no vote is unlabeled; equal votes (or a majority of "tie") is
tied; annotators who disagree are conflicting, and --resolve majority keeps
the majority's choice while --resolve drop drops the pair. A ranking gives
its best-vs-worst pair (Borda count over annotators) or, with
--ranking-pairs all, every pair it orders. Every task lands in a counted
bucket of the summary; nothing is dropped silently. A malformed task stops
the run with its position (file, task index and id, line or row), or with
--skip-bad is counted and skipped.
"""
import argparse
import csv
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labeling as L  # noqa: E402

PROG = "label_import"
E = L.LabelError


class Ranking:
    """Annotators' rankings of the completions of one prompt."""

    def __init__(self, prompt, texts, where):
        self.prompt, self.texts, self.where = prompt, texts, where
        self.votes = {}  # annotator -> tiers (lists of texts), best first


# Thumbs labels as people type them; empty = no vote.
THUMBS = {"up": True, "good": True, "yes": True, "y": True, "true": True, "1": True, "+": True, "+1": True,
          "\U0001f44d": True, "thumbs up": True, "positive": True, "desirable": True,
          "down": False, "bad": False, "no": False, "n": False, "false": False, "0": False, "-": False, "-1": False,
          "\U0001f44e": False, "thumbs down": False, "negative": False, "undesirable": False}


class Thumb:
    """One completion of one prompt and every annotator's up/down vote."""

    def __init__(self, prompt, text):
        self.prompt, self.text = prompt, text
        self.votes = {}

    def resolve(self, mode):
        """-> ("kept", label, conflicting) | ("tied", conflicting) | ("conflict",) | ("unlabeled",)"""
        if not self.votes:
            return ("unlabeled",)
        up = sum(1 for v in self.votes.values() if v)
        down = len(self.votes) - up
        conflicting = up > 0 and down > 0
        if conflicting and mode == "drop":
            return ("conflict",)
        if up == down:
            return ("tied", conflicting)
        return ("kept", up > down, conflicting)


def thumbs_label(cell, what):
    v = THUMBS.get(cell.strip().lower())
    if v is None:
        raise E("%s: %s is not up, down (good, bad, yes, no, 1, 0) or empty" % (what, json.dumps(cell)))
    return v


class Importer:
    def __init__(self, args):
        self.a = args
        self.coll = L.Collector()
        self.rankings, self.rank_order = {}, []
        self.prompts = L.read_prompts(args.prompts) if args.prompts else None
        self.n = dict.fromkeys(["files", "tasks", "annotations", "cancelled", "no_result", "drafts", "bad_skipped",
                                "unusable", "left", "right", "tie_votes", "thumbs_tasks", "up_votes",
                                "down_votes"], 0)
        self.thumbs, self.thumb_order = {}, []
        self.first_bad = None

    # ---------------------------------------------------------------- shared

    def guard(self, where, fn):
        try:
            fn()
        except E as e:
            msg = "%s: %s" % (where, e)
            if not self.a.skip_bad:
                raise E(msg)
            self.n["bad_skipped"] += 1
            self.first_bad = self.first_bad or msg

    def restore_prompt(self, shown, pid):
        """The prompt recorded at export ("p<i>" ids into --prompts): the
        message list a labeler saw flattened."""
        if self.prompts is None or pid is None:
            return shown
        m = re.match(r"p(\d+)(-|$)", str(pid))
        if not m:
            raise E('id "%s" is not an exported "p<i>..." id, so --prompts cannot restore its prompt' % pid)
        i = int(m.group(1))
        if i >= len(self.prompts):
            raise E('id "%s" names prompt %d but --prompts %s has %d' % (pid, i, self.a.prompts, len(self.prompts)))
        if L.prompt_text(self.prompts[i]) != shown:
            raise E('the prompt differs from prompt %d of --prompts %s (another export\'s file?)' % (i, self.a.prompts))
        return self.prompts[i]

    def pair(self, prompt, a, b, where):
        """The comparison for two texts, or None (counted) when align could
        never train on it."""
        if a == b or not a or not b:
            self.n["unusable"] += 1
            return None
        return self.coll.get(prompt, a, b, where)

    def pair_vote(self, comp, annotator, side, a, b):
        """side: "left" | "right" | "tie"."""
        if side == "tie":
            self.n["tie_votes"] += 1
            comp.vote(annotator, L.TIE, self.coll.stats)
        else:
            self.n[side] += 1
            comp.vote(annotator, a if side == "left" else b, self.coll.stats)

    def thumb(self, prompt, text):
        """The thumbs item for one completion, or None (counted) when empty."""
        self.n["thumbs_tasks"] += 1
        if not text:
            self.n["unusable"] += 1
            return None
        k = (L.prompt_key(prompt), text)
        t = self.thumbs.get(k)
        if t is None:
            t = self.thumbs[k] = Thumb(prompt, text)
            self.thumb_order.append(t)
        return t

    def thumb_vote(self, t, annotator, up):
        self.n["up_votes" if up else "down_votes"] += 1
        if annotator in t.votes:
            self.coll.stats["votes_replaced"] += 1
        t.votes[annotator] = up

    def ranking(self, prompt, texts, where):
        uniq = list(dict.fromkeys(texts))
        if len(uniq) < 2 or any(not t for t in uniq):
            self.n["unusable"] += 1
            return None
        k = (L.prompt_key(prompt), frozenset(uniq))
        r = self.rankings.get(k)
        if r is None:
            r = self.rankings[k] = Ranking(prompt, uniq, where)
            self.rank_order.append(r)
        return r

    def rank_vote(self, r, annotator, tiers):
        seen, clean = set(), []
        for tier in tiers:
            t = [x for x in dict.fromkeys(tier) if x not in seen]
            seen.update(t)
            if t:
                clean.append(t)
        if sum(len(t) for t in clean) < 2:
            self.n["no_result"] += 1
            return
        if annotator in r.votes:
            self.coll.stats["votes_replaced"] += 1
        r.votes[annotator] = clean

    # ---------------------------------------------------------------- Label Studio

    def labelstudio(self, path, doc):
        for i, task in enumerate(doc):
            where = "%s: task %d" % (path, i)
            if isinstance(task, dict) and "id" in task:
                where += " (id %s)" % task["id"]
            self.guard(where, lambda: self.ls_task(task, path, i))

    def ls_task(self, task, path, i):
        if not isinstance(task, dict):
            raise E("not a JSON object")
        data = task.get("data")
        if not isinstance(data, dict):
            raise E('no "data" object (a Label Studio JSON export is needed, not JSON-MIN or CSV)')
        anns = task.get("annotations", task.get("completions", []))  # "completions": Label Studio < 1.0
        if anns is None:
            anns = []
        if not isinstance(anns, list):
            raise E('"annotations" is not a list')
        meta = data.get("align") if isinstance(data.get("align"), dict) else {}
        shown = data.get("prompt")
        if not isinstance(shown, str):
            raise E('data.prompt is missing or not a string')
        prompt = meta.get("prompt", shown)
        if not isinstance(prompt, str):
            L.check_messages(prompt, "data.align.prompt")
        self.n["tasks"] += 1
        if "items" in data:
            return self.ls_ranking(task, data, prompt, anns, path, i)
        if "answer" in data and "answer1" not in data:
            return self.ls_thumbs(data, prompt, anns, path, i)
        for f in ("answer1", "answer2"):
            if not isinstance(data.get(f), str):
                raise E('data.%s is missing or not a string (a pairwise task has prompt, answer1, answer2)' % f)
        a, b = data["answer1"], data["answer2"]
        comp = self.pair(prompt, a, b, "%s: task %d" % (path, i))
        votes = []
        for j, ann in enumerate(anns):
            v = self.ls_annotation(ann, j, "pairwise", path, i)
            if v is None:
                continue
            sel = v[1].get("selected") if isinstance(v[1], dict) else None
            if sel not in ("left", "right"):
                raise E('annotation %d: pairwise value.selected is %s, expected "left" or "right"'
                        % (j, json.dumps(sel)))
            votes.append((v[0], sel))
        if comp:
            for who, sel in votes:
                self.pair_vote(comp, who, sel, a, b)

    def ls_thumbs(self, data, prompt, anns, path, i):
        if not isinstance(data["answer"], str):
            raise E("data.answer is not a string")
        votes = []
        for j, ann in enumerate(anns):
            v = self.ls_annotation(ann, j, "choices", path, i)
            if v is None:
                continue
            ch = v[1].get("choices") if isinstance(v[1], dict) else None
            if not isinstance(ch, list) or len(ch) != 1 or not isinstance(ch[0], str):
                raise E("annotation %d: choices value.choices is %s, expected one of [\"up\"] or [\"down\"]"
                        % (j, json.dumps(ch)))
            votes.append((v[0], thumbs_label(ch[0], "annotation %d: choice" % j)))
        t = self.thumb(prompt, data["answer"])
        if t:
            for who, up in votes:
                self.thumb_vote(t, who, up)

    def ls_annotation(self, ann, j, kind, path, i):
        """(annotator, value) of one annotation, or None when it holds no
        preference (cancelled/skipped, or no result of this kind)."""
        if not isinstance(ann, dict):
            raise E("annotation %d is not a JSON object" % j)
        self.n["annotations"] += 1
        if ann.get("was_cancelled"):
            self.n["cancelled"] += 1
            return None
        res = ann.get("result") or []
        if not isinstance(res, list):
            raise E("annotation %d: \"result\" is not a list" % j)
        vals = [r.get("value") for r in res if isinstance(r, dict) and r.get("type") == kind]
        if not vals:
            self.n["no_result"] += 1
            return None
        if any(v != vals[0] for v in vals):
            raise E("annotation %d has %d different %s results" % (j, len(vals), kind))
        who = ann.get("completed_by")
        if isinstance(who, dict):
            who = who.get("id", who.get("email"))
        if who is None:  # unknown annotator: every annotation counts on its own
            who = "%s#%d#%s" % (path, i, ann.get("id", j))
        return "ls:%s" % who, vals[0]

    def ls_ranking(self, task, data, prompt, anns, path, i):
        items = data["items"]
        if not isinstance(items, list):
            raise E("data.items is not a list")
        by_id = {}
        for k, it in enumerate(items):
            if not isinstance(it, dict) or not isinstance(it.get("id"), str) or not isinstance(it.get("body"), str):
                raise E("data.items[%d] is not {id, body} with string values" % k)
            if it["id"] in by_id:
                raise E('data.items[%d]: id "%s" repeated' % (k, it["id"]))
            by_id[it["id"]] = it["body"]
        r = self.ranking(prompt, list(by_id.values()), "%s: task %d" % (path, i))
        votes = []
        for j, ann in enumerate(anns):
            v = self.ls_annotation(ann, j, "ranker", path, i)
            if v is None:
                continue
            order = v[1].get("ranker") if isinstance(v[1], dict) else None
            if isinstance(order, dict):
                full = [b for b in order.values() if b]
                if len(full) != 1:
                    raise E("annotation %d: the ranker result uses %d buckets; rank into one list "
                            "(the exported config has no buckets)" % (j, len(full)))
                order = full[0]
            if not isinstance(order, list) or not all(isinstance(x, str) for x in order):
                raise E("annotation %d: value.ranker is not a list of item ids" % j)
            for x in order:
                if x not in by_id:
                    raise E('annotation %d: ranked id "%s" is not in data.items' % (j, x))
            votes.append((v[0], [[by_id[x]] for x in order]))
        if r:
            for who, tiers in votes:
                self.rank_vote(r, who, tiers)

    # ---------------------------------------------------------------- CSV

    CHOICES = {"a": "left", "left": "left", "1": "left", "answer_a": "left",
               "b": "right", "right": "right", "2": "right", "answer_b": "right",
               "tie": "tie", "=": "tie", "same": "tie", "equal": "tie", "both": "tie", "neither": "tie"}

    def csv_file(self, path):
        try:
            f = open(path, encoding="utf-8-sig", newline="")
        except OSError as e:
            raise E("%s: cannot read (%s)" % (path, e.strerror or e))
        with f:
            try:
                head = f.readline()
                f.seek(0)
                # Spreadsheets in some locales save with ';' or tabs.
                delim = max(",;\t", key=head.count)
                rd = csv.reader(f, delimiter=delim)
                header = next(rd, None)
                if header is None:
                    raise E("%s: empty file" % path)
                cols = [h.strip().lower().replace(" ", "_") for h in header]
                alias = {"answer1": "answer_a", "answer2": "answer_b"}
                cols = [alias.get(c, c) for c in cols]
                if "answer" in cols and "answer_a" not in cols:
                    return self.csv_thumbs(path, rd, header, cols)
                missing = [c for c in ("prompt", "answer_a", "answer_b") if c not in cols]
                choice_cols = [k for k, c in enumerate(cols) if c.startswith("choice")]
                if missing or not choice_cols:
                    raise E("%s: line 1: the header lacks %s (found: %s)"
                            % (path, ", ".join(missing + ([] if choice_cols else ["a choice column"])),
                               ", ".join(header)))
                idx = {c: cols.index(c) for c in ("prompt", "answer_a", "answer_b", "pair_id") if c in cols}
                src = os.path.abspath(path)
                line = 2
                for n, row in enumerate(rd, 1):
                    where = "%s: row %d (line %d)" % (path, n, line)
                    line = rd.line_num + 1
                    if not any(c.strip() for c in row):
                        continue
                    self.guard(where, lambda: self.csv_row(row, idx, choice_cols, header, src))
            except UnicodeDecodeError as e:
                raise E("%s: not UTF-8 text (byte %d); save the sheet as CSV UTF-8" % (path, e.start))
            except csv.Error as e:
                raise E("%s: line %d: %s" % (path, rd.line_num, e))

    def csv_thumbs(self, path, rd, header, cols):
        label_cols = [k for k, c in enumerate(cols) if c.startswith("label")]
        if "prompt" not in cols or not label_cols:
            raise E("%s: line 1: a thumbs sheet needs columns prompt, answer and label (found: %s)"
                    % (path, ", ".join(header)))
        idx = {c: cols.index(c) for c in ("prompt", "answer", "sample_id") if c in cols}
        src = os.path.abspath(path)
        line = 2
        for n, row in enumerate(rd, 1):
            where = "%s: row %d (line %d)" % (path, n, line)
            line = rd.line_num + 1
            if not any(c.strip() for c in row):
                continue
            self.guard(where, lambda: self.csv_thumbs_row(row, idx, label_cols, header, src))

    def csv_thumbs_row(self, row, idx, label_cols, header, src):
        if len(row) < len(header):
            row = row + [""] * (len(header) - len(row))
        self.n["tasks"] += 1
        shown, text = row[idx["prompt"]], row[idx["answer"]]
        pid = row[idx["sample_id"]].strip() if "sample_id" in idx else None
        if not shown.strip():
            raise E("the prompt cell is empty")
        prompt = self.restore_prompt(shown, pid or None)
        votes = []
        for k in label_cols:
            self.n["annotations"] += 1
            if not row[k].strip():
                self.n["no_result"] += 1
                continue
            votes.append(("csv:%s#%s" % (src, header[k].strip()), thumbs_label(row[k], 'column "%s"' % header[k])))
        t = self.thumb(prompt, text)
        if t:
            for who, up in votes:
                self.thumb_vote(t, who, up)

    def csv_row(self, row, idx, choice_cols, header, src):
        if len(row) < len(header):
            row = row + [""] * (len(header) - len(row))
        self.n["tasks"] += 1
        shown, a, b = row[idx["prompt"]], row[idx["answer_a"]], row[idx["answer_b"]]
        pid = row[idx["pair_id"]].strip() if "pair_id" in idx else None
        if not shown.strip():
            raise E("the prompt cell is empty")
        prompt = self.restore_prompt(shown, pid or None)
        comp = self.pair(prompt, a, b, None)
        votes = []
        for k in choice_cols:
            v = row[k].strip().lower()
            self.n["annotations"] += 1
            if not v:
                self.n["no_result"] += 1
                continue
            side = self.CHOICES.get(v)
            if side is None:
                raise E('column "%s": %s is not A, B, tie or empty' % (header[k], json.dumps(row[k])))
            votes.append(("csv:%s#%s" % (src, header[k].strip()), side))
        if comp:
            for who, side in votes:
                self.pair_vote(comp, who, side, a, b)

    # ---------------------------------------------------------------- Argilla

    def argilla(self, path, records):
        for where, rec in records:
            if isinstance(rec, dict) and ("id" in rec or "external_id" in rec):
                where += " (id %s)" % rec.get("id", rec.get("external_id"))
            self.guard(where, lambda: self.ag_record(rec, where))

    def ag_record(self, rec, where):
        if not isinstance(rec, dict):
            raise E("not a JSON object")
        q = self.a.question
        fields = rec.get("fields") if isinstance(rec.get("fields"), dict) else {
            k: v for k, v in rec.items() if isinstance(v, str) and "." not in k and k not in ("id", "external_id",
                                                                                             "status", "_server_id")}
        pf = self.a.prompt_field
        if not isinstance(fields.get(pf), str):
            raise E('no text field "%s" (fields: %s; see --prompt-field)' % (pf, ", ".join(sorted(fields)) or "none"))
        self.n["tasks"] += 1
        meta = rec.get("metadata") if isinstance(rec.get("metadata"), dict) else {}
        prompt = fields[pf]
        if isinstance(meta.get("prompt_json"), str):
            try:
                prompt = json.loads(meta["prompt_json"])
            except ValueError:
                raise E("metadata.prompt_json is not JSON")
            if not isinstance(prompt, str):
                L.check_messages(prompt, "metadata.prompt_json")
        names = {k: v for k, v in fields.items() if k != pf and isinstance(v, str)}
        if len(names) == 1:  # one response: a thumbs record (label_export --thumbs)
            return self.ag_thumbs(rec, prompt, list(names.values())[0])
        r = self.ranking(prompt, list(names.values()), where)
        votes = []
        for who, status, value in self.ag_responses(rec, q):
            self.n["annotations"] += 1
            if status == "discarded":
                self.n["cancelled"] += 1
                continue
            if status == "draft":
                self.n["drafts"] += 1
                continue
            if value is None:
                self.n["no_result"] += 1
                continue
            if not isinstance(value, list):
                raise E('response of %s: the "%s" value is not a list' % (who, q))
            if all(isinstance(x, str) for x in value):
                tiers = [[x] for x in value]
            elif all(isinstance(x, dict) for x in value):
                by_rank = {}
                for x in value:
                    rk = x.get("rank")
                    if not isinstance(x.get("value"), str) or not isinstance(rk, int) or isinstance(rk, bool) or rk < 1:
                        raise E('response of %s: ranking entry %s is not {value, rank >= 1}' % (who, json.dumps(x)))
                    by_rank.setdefault(rk, []).append(x["value"])
                tiers = [by_rank[k] for k in sorted(by_rank)]  # equal ranks are ties
            else:
                raise E('response of %s: the "%s" value mixes names and {value, rank} entries' % (who, q))
            for t in tiers:
                for x in t:
                    if x not in names:
                        raise E('response of %s: ranked "%s" is not a field of the record' % (who, x))
            votes.append(("argilla:%s" % who, [[names[x] for x in t] for t in tiers]))
        if r:
            for who, tiers in votes:
                self.rank_vote(r, who, tiers)

    def ag_thumbs(self, rec, prompt, text):
        q = self.a.label_question
        votes = []
        for who, status, value in self.ag_responses(rec, q):
            self.n["annotations"] += 1
            if status == "discarded":
                self.n["cancelled"] += 1
                continue
            if status == "draft":
                self.n["drafts"] += 1
                continue
            if isinstance(value, list) and len(value) == 1:  # a multi-label question's answer
                value = value[0]
            if value is None:
                self.n["no_result"] += 1
                continue
            if not isinstance(value, str):
                raise E('response of %s: the "%s" value is not a label' % (who, q))
            votes.append(("argilla:%s" % who, thumbs_label(value, "response of %s" % who)))
        t = self.thumb(prompt, text)
        if t:
            for who, up in votes:
                self.thumb_vote(t, who, up)

    @staticmethod
    def ag_responses(rec, q):
        """(user, status, value) for each response to question q, whatever
        the Argilla version that wrote the record."""
        resp = rec.get("responses")
        if isinstance(resp, list):  # Argilla 1.x FeedbackDataset
            for k, x in enumerate(resp):
                if not isinstance(x, dict):
                    raise E("responses[%d] is not a JSON object" % k)
                vals = x.get("values") or {}
                if not isinstance(vals, dict):
                    raise E("responses[%d].values is not a JSON object" % k)
                if q not in vals and vals:
                    raise E('responses[%d] has no answer to question "%s" (it has: %s; see --question)'
                            % (k, q, ", ".join(sorted(vals))))
                v = vals.get(q)
                yield (x.get("user_id", "response %d" % k), x.get("status", "submitted"),
                       v.get("value") if isinstance(v, dict) else v)
        elif isinstance(resp, dict):  # Argilla 2.x, nested
            if resp and q not in resp:
                raise E('no responses to question "%s" (questions: %s; see --question)' % (q, ", ".join(sorted(resp))))
            lst = resp.get(q) or []
            if not isinstance(lst, list):
                raise E('responses.%s is not a list' % q)
            for k, x in enumerate(lst):
                if not isinstance(x, dict):
                    raise E("responses.%s[%d] is not a JSON object" % (q, k))
                yield x.get("user_id", "response %d" % k), x.get("status", "submitted"), x.get("value")
        elif resp is None and (q + ".responses") in rec:  # Argilla 2.x, flattened
            vals = rec.get(q + ".responses") or []
            users = rec.get(q + ".responses.users") or []
            status = rec.get(q + ".responses.status") or []
            if not isinstance(vals, list):
                raise E('"%s.responses" is not a list' % q)
            for k, v in enumerate(vals):
                yield (users[k] if k < len(users) else "response %d" % k,
                       status[k] if k < len(status) else "submitted", v)
        elif resp is not None:
            raise E('"responses" is neither a list (Argilla 1.x) nor an object (Argilla 2.x)')

    # ---------------------------------------------------------------- files

    def read(self, path):
        self.n["files"] += 1
        fmt = self.a.format
        if fmt == "auto":
            fmt = "csv" if path.lower().endswith((".csv", ".tsv")) else None
        if fmt == "csv":
            return self.csv_file(path)
        recs = list(L.read_records(path))
        if fmt == "auto" or fmt is None:
            first = next((r for _, r in recs if isinstance(r, dict)), None)
            if first is None:
                raise E("%s: no tasks or records" % path)
            is_ls = "data" in first or "annotations" in first
            fmt = "labelstudio" if is_ls else "argilla"
        if fmt == "labelstudio":
            if recs and recs[0][0].startswith(path + ":") and not recs[0][0].startswith(path + ": element"):
                raise E("%s: a Label Studio export is one JSON array of tasks, not JSON Lines" % path)
            return self.labelstudio(path, [r for _, r in recs])
        return self.argilla(path, recs)

    # ---------------------------------------------------------------- output

    def resolve(self):
        mode = self.a.resolve
        out, c = [], dict.fromkeys(["kept", "kept_disagreed", "tied", "conflicting", "conflicting_dropped",
                                    "unlabeled", "duplicates"], 0)
        seen = set()

        def take(comp):
            res = comp.resolve(mode)
            if res[0] == "kept":
                k = (L.prompt_key(comp.prompt), res[1], res[2])
                if k in seen:  # the same preference from another ranking: written once
                    c["duplicates"] += 1
                    return
                seen.add(k)
                out.append({"prompt": comp.prompt, "chosen": res[1], "rejected": res[2]})
                c["kept"] += 1
                c["kept_disagreed"] += res[3]
                c["conflicting"] += res[3]
            elif res[0] == "tied":
                c["tied"] += 1
                c["conflicting"] += res[1]
            elif res[0] == "conflict":
                c["conflicting"] += 1
                c["conflicting_dropped"] += 1
            else:
                c["unlabeled"] += 1

        for comp in self.coll.order:
            take(comp)
        c["kept_desirable"] = c["kept_undesirable"] = c["thumbs_kept_disagreed"] = 0
        for t in self.thumb_order:
            res = t.resolve(mode)
            if res[0] == "kept":
                out.append({"prompt": t.prompt, "completion": t.text, "label": res[1]})
                c["kept_desirable" if res[1] else "kept_undesirable"] += 1
                c["thumbs_kept_disagreed"] += res[2]
                c["conflicting"] += res[2]
            elif res[0] == "tied":
                c["tied"] += 1
                c["conflicting"] += res[1]
            elif res[0] == "conflict":
                c["conflicting"] += 1
                c["conflicting_dropped"] += 1
            else:
                c["unlabeled"] += 1
        for r in self.rank_order:
            if not r.votes:
                c["unlabeled"] += 1
                continue
            if self.a.ranking_pairs == "best-worst":
                bw = L.best_worst(list(r.votes.values()))
                pairs = [bw]
            else:
                pairs = [(x, y) for i, x in enumerate(r.texts) for y in r.texts[i + 1:]]
            for x, y in pairs:
                comp = L.Comparison(r.prompt, x, y, r.where)
                for who, tiers in r.votes.items():
                    pos = {t: k for k, tier in enumerate(tiers) for t in tier}
                    if x in pos and y in pos:
                        comp.vote(who, L.TIE if pos[x] == pos[y] else (x if pos[x] < pos[y] else y), {})
                if comp.votes:  # a pair no annotator placed both of (partial rankings) is no comparison
                    take(comp)
        return out, c


def main(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example:\n  label_import.py export.json pairs_alice.csv pairs_bob.csv "
                                        "--prompts label/prompts.jsonl --out prefs.jsonl")
    ap.add_argument("files", nargs="+", metavar="FILE",
                    help="Label Studio JSON exports, filled CSVs, Argilla exports")
    ap.add_argument("--out", required=True, metavar="FILE", help="prefs.jsonl to write")
    ap.add_argument("--format", choices=["auto", "labelstudio", "csv", "argilla"], default="auto",
                    help="input format (default: told by each file: .csv/.tsv, a JSON array of tasks with "
                         "\"data\", else Argilla records)")
    ap.add_argument("--resolve", choices=["majority", "drop"], default="majority",
                    help="annotators who disagree on a pair: keep the majority's choice (equal votes = tied), "
                         "or drop the pair (default majority)")
    ap.add_argument("--ranking-pairs", choices=["best-worst", "all"], default="best-worst",
                    help="pairs from a ranking: best vs worst (default), or every ordered pair")
    ap.add_argument("--prompts", metavar="FILE", help="label_export's prompts.jsonl: restores message-list prompts "
                    "from the p<i> ids (needed for a CSV of chat prompts; checked against the text shown)")
    ap.add_argument("--question", default="ranking", help="Argilla ranking question name (default ranking)")
    ap.add_argument("--label-question", default="label",
                    help="Argilla thumbs label question name (default label; values good/bad, up/down)")
    ap.add_argument("--prompt-field", default="prompt", help="Argilla field holding the prompt (default prompt)")
    ap.add_argument("--skip-bad", action="store_true", help="count and skip malformed tasks/rows/records "
                    "instead of stopping at the first")
    ap.add_argument("--summary", metavar="FILE", help="also write the summary counts as JSON")
    a = ap.parse_args(argv)
    try:
        imp = Importer(a)
        for p in a.files:
            imp.read(p)
        out, c = imp.resolve()
        s = dict(imp.n)
        s.update(c)
        s["votes_replaced"] = imp.coll.stats["votes_replaced"]
        s["first_bad"] = imp.first_bad
        line = ("%d tasks in %d files, %d annotations (%d cancelled/skipped/discarded, %d without a choice, "
                "%d drafts): %d pairs kept (%d over disagreeing annotators), %d tied, %d conflicting dropped, "
                "%d unlabeled, %d unusable (identical or empty completions), %d duplicate pairs written once, "
                "%d bad skipped, %d repeated votes replaced; left/A chosen %d times, right/B %d, tie %d"
                % (s["tasks"], s["files"], s["annotations"], s["cancelled"], s["no_result"], s["drafts"], s["kept"],
                   s["kept_disagreed"], s["tied"],
                   s["conflicting_dropped"], s["unlabeled"], s["unusable"], s["duplicates"], s["bad_skipped"], s["votes_replaced"],
                   s["left"], s["right"], s["tie_votes"]))
        if s["thumbs_tasks"]:
            line += ("; thumbs: %d completions labelled (%d up, %d down; %d over disagreeing annotators), "
                     "%d up and %d down votes" % (s["kept_desirable"] + s["kept_undesirable"], s["kept_desirable"],
                                                  s["kept_undesirable"], s["thumbs_kept_disagreed"], s["up_votes"],
                                                  s["down_votes"]))
        if a.summary:
            L.write_text(a.summary, json.dumps(s, indent=1) + "\n")
        if not out:
            raise E("no preference pairs or labelled completions to write (%s)" % line)
        L.write_jsonl(a.out, out)
    except E as e:
        L.die(PROG, e)
    print("%s: %s -> %s" % (PROG, line, a.out), file=sys.stderr)
    if imp.first_bad:
        print("%s: the first bad one: %s" % (PROG, imp.first_bad), file=sys.stderr)


if __name__ == "__main__":
    main()
