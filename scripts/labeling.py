"""Shared code of the preference-labeling scripts (label_export, label_import,
label_auto): reading records with their position, prompts, sampling with
align's `generate`, and turning annotators' votes into preference pairs.

Python 3 standard library only: these scripts run where align's C programs
run, on a stock Debian python3, with no pip.

Every error is a LabelError whose message names the place at fault
("FILE:LINE: reason", "FILE: task 3 (id 17): reason", "FILE: row 4 (line
5): reason"); the scripts print it as one line and exit 1.
"""
import json
import os
import subprocess
import sys
import tempfile


class LabelError(Exception):
    pass


def die(prog, err):
    print("%s: %s" % (prog, err), file=sys.stderr)
    sys.exit(1)


# ------------------------------------------------------------------ reading


def read_records(path):
    """Yield (where, record) for a JSON Lines file or a .json array.

    As align's dataset reader decides: a file whose first non-blank byte is
    '[' is an array (positions "element N", 0-based as jq '.[N]'), anything
    else is JSONL (positions "LINE", 1-based, blank lines skipped)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as e:
        raise LabelError("%s: cannot read (%s)" % (path, e.strerror or e))
    except UnicodeDecodeError as e:
        raise LabelError("%s: not UTF-8 text (byte %d)" % (path, e.start))
    if text.lstrip()[:1] == "[":
        try:
            arr = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelError("%s:%d: invalid JSON: %s" % (path, e.lineno, e.msg))
        for i, rec in enumerate(arr):
            yield "%s: element %d" % (path, i), rec
        return
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise LabelError("%s:%d: invalid JSON: %s (column %d)" % (path, n, e.msg, e.colno))
        yield "%s:%d" % (path, n), rec


def load_json(path):
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except OSError as e:
        raise LabelError("%s: cannot read (%s)" % (path, e.strerror or e))
    except UnicodeDecodeError as e:
        raise LabelError("%s: not UTF-8 text (byte %d)" % (path, e.start))
    except json.JSONDecodeError as e:
        raise LabelError("%s:%d: invalid JSON: %s (column %d)" % (path, e.lineno, e.msg, e.colno))


def write_jsonl(path, records):
    """Atomic: a half-written prefs file must never look like a whole one."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path, text):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


# ------------------------------------------------------------------ prompts


def check_messages(v, what):
    if not isinstance(v, list) or not v:
        raise LabelError("%s must be a string or a non-empty list of {role, content} messages" % what)
    for i, m in enumerate(v):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise LabelError("%s: message %d is not {role, content} with string values" % (what, i))


def prompt_of(rec):
    """The prompt of a prompt record, as align's dataset reader finds it:
    "prompt" (string or messages), "question", "messages" (a final assistant
    message dropped), or a preference record's explicit prompt."""
    if not isinstance(rec, dict):
        raise LabelError("not a JSON object")
    if "prompt" in rec:
        p = rec["prompt"]
        if isinstance(p, str):
            if not p:
                raise LabelError("the prompt is empty")
            return p
        check_messages(p, 'field "prompt"')
        return p
    if "question" in rec:
        if not isinstance(rec["question"], str) or not rec["question"]:
            raise LabelError('field "question" must be a non-empty string')
        return rec["question"]
    if "messages" in rec:
        m = rec["messages"]
        check_messages(m, 'field "messages"')
        if m[-1]["role"] == "assistant":
            m = m[:-1]
        if not m:
            raise LabelError('field "messages" has no message before the assistant\'s')
        return m
    if "chosen" in rec:
        raise LabelError('a preference record without "prompt" (implicit prompts are not read here; add "prompt")')
    raise LabelError('no prompt: expected "prompt", "question" or "messages"')


def prompt_text(p):
    """How a prompt is shown to a labeler: a string as is, messages as
    "role: content" blocks."""
    if isinstance(p, str):
        return p
    return "\n\n".join("%s: %s" % (m["role"], m["content"]) for m in p)


def prompt_key(p):
    return json.dumps(p, sort_keys=True, ensure_ascii=False)


def read_prompts(path):
    out = []
    for where, rec in read_records(path):
        try:
            out.append(prompt_of(rec))
        except LabelError as e:
            raise LabelError("%s: %s" % (where, e))
    if not out:
        raise LabelError("%s: no prompts" % path)
    return out


# ------------------------------------------------------------------ samples


class Group:
    """The samples of one prompt: (sample id, completion text), distinct
    texts only (a repeated text has nothing to compare against itself)."""

    def __init__(self, index, prompt):
        self.index = index
        self.prompt = prompt
        self.samples = []
        self.texts = set()
        self.duplicates = 0

    def add(self, sid, text):
        if text in self.texts:
            self.duplicates += 1
            return
        self.texts.add(text)
        self.samples.append((sid, text))


def group_samples(records, prompts=None):
    """Group (where, record) sample lines by prompt, in first-seen order.

    A record is {prompt, completion} (generate writes {index, sample, prompt,
    completion, ...}). With `prompts` (the list generate was given), the
    record's "index" selects the original prompt, because generate's own
    "prompt" is the text rendered with the chat template, which would be
    rendered a second time in training."""
    groups, by_key = [], {}
    n = 0
    for where, rec in records:
        n += 1
        try:
            if not isinstance(rec, dict):
                raise LabelError("not a JSON object")
            c = rec.get("completion")
            if not isinstance(c, str):
                raise LabelError('missing string field "completion"')
            if prompts is not None:
                i = rec.get("index")
                if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(prompts):
                    raise LabelError('field "index" must be a prompt index in 0..%d' % (len(prompts) - 1))
                p = prompts[i]
            else:
                p = prompt_of({"prompt": rec.get("prompt")} if "prompt" in rec else rec)
        except LabelError as e:
            raise LabelError("%s: %s" % (where, e))
        k = rec["index"] if prompts is not None else prompt_key(p)
        g = by_key.get(k)
        if g is None:
            g = by_key[k] = Group(k if prompts is not None else len(groups), p)
            groups.append(g)
        sid = rec.get("sample")
        if not isinstance(sid, int) or isinstance(sid, bool):
            sid = len(g.samples) + g.duplicates
        g.add(sid, c)
    return groups, n


def run_generate(bin_path, model, prompts, n, temperature, seed, max_new_tokens, extra, out_path):
    """Sample with align's generate; returns the path of its JSONL output.
    Prompts go in as one {"prompt": ...} line each, so generate's "index"
    is our list index."""
    fd, pfile = tempfile.mkstemp(prefix="label-prompts-", suffix=".jsonl")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p}, ensure_ascii=False) + "\n")
    cmd = [bin_path, "--model", model, "--prompts", pfile, "--n", str(n), "--temperature", repr(temperature),
           "--seed", str(seed), "--out", out_path]
    if max_new_tokens:
        cmd += ["--max-new-tokens", str(max_new_tokens)]
    cmd += extra
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    except OSError as e:
        raise LabelError("--generate-bin %s: cannot run (%s)" % (bin_path, e.strerror or e))
    finally:
        os.unlink(pfile)
    if r.returncode != 0:
        last = [l for l in r.stderr.splitlines() if l.strip()]
        raise LabelError("generate failed (exit %d): %s" % (r.returncode, last[-1] if last else "no message"))
    return out_path


# ------------------------------------------------------------------ votes

TIE = "tie"


class Comparison:
    """Two completions of one prompt and every annotator's vote on them.

    A vote is the winning text or TIE. One vote per annotator: a later vote
    by the same annotator replaces the earlier (an edited annotation, or the
    same export read twice) and is counted as replaced."""

    def __init__(self, prompt, x, y, where):
        self.prompt, self.x, self.y, self.where = prompt, x, y, where
        self.votes = {}

    def vote(self, annotator, winner, stats):
        if annotator in self.votes:
            stats["votes_replaced"] += 1
        self.votes[annotator] = winner

    def resolve(self, mode):
        """-> ("kept", chosen, rejected, conflicting) | ("tied", conflicting) | ("conflict",) | ("unlabeled",)

        majority: the outcome with the most votes wins (a tie vote is an
        outcome); equal counts are a tie. drop: any disagreement drops it."""
        if not self.votes:
            return ("unlabeled",)
        counts = {}
        for w in self.votes.values():
            counts[w] = counts.get(w, 0) + 1
        conflicting = len(counts) > 1
        if conflicting and mode == "drop":
            return ("conflict",)
        best = max(counts.values())
        winners = [w for w, c in counts.items() if c == best]
        if len(winners) > 1 or winners[0] == TIE:
            return ("tied", conflicting)
        w = winners[0]
        return ("kept", w, self.y if w == self.x else self.x, conflicting)


class Collector:
    """Comparisons keyed by (prompt, unordered pair of texts), so the same
    pair labelled in two tasks, two files or two tools pools its votes."""

    def __init__(self):
        self.comps = {}
        self.order = []
        self.stats = {"votes_replaced": 0}

    def get(self, prompt, a, b, where):
        k = (prompt_key(prompt),) + tuple(sorted((a, b)))
        c = self.comps.get(k)
        if c is None:
            c = self.comps[k] = Comparison(prompt, a, b, where)
            self.order.append(c)
        return c


def ranking_votes(ranking):
    """Pairwise outcomes of one ranking, given as tiers (lists of texts,
    best tier first; texts in one tier are tied): yields (a, b, winner)."""
    for i, tier in enumerate(ranking):
        for j, a in enumerate(tier):
            for b in tier[j + 1:]:
                yield a, b, TIE
            for lower in ranking[i + 1:]:
                for b in lower:
                    yield a, b, a


def best_worst(rankings):
    """The best and worst texts over several annotators' rankings by a Borda
    count (wins minus losses in each ranking, summed), ties broken by first
    appearance; None with fewer than two texts. When every text scores the
    same, the pair is still returned and its votes decide (tie or conflict)."""
    score, first = {}, {}
    for r in rankings:
        for tier in r:
            for t in tier:
                score.setdefault(t, 0)
                first.setdefault(t, len(first))
        for a, b, w in ranking_votes(r):
            if w != TIE:
                score[w] += 1
                score[b if w == a else a] -= 1
    if len(score) < 2:
        return None
    best = min(score, key=lambda t: (-score[t], first[t]))
    worst = min((t for t in score if t != best), key=lambda t: (score[t], -first[t]))
    return best, worst
