#!/usr/bin/env python3
"""Convert a Hugging Face hub dataset, or a Parquet / Arrow file, to the
JSONL that sft_run, dpo_run, rm_train and ppo_run read.

align reads JSONL, .json arrays, CSV/TSV and .xlsx itself; the hub's own
formats (Parquet shards, the Arrow files in ~/.cache/huggingface/datasets)
go through this script. It needs pyarrow, and `datasets` for hub names
(both from PyPI, in a venv: python3 -m venv .venv && .venv/bin/pip install
pyarrow datasets); nothing in align or its tests needs them.

  # a local Parquet or Arrow file (HF cache files are Arrow streams)
  python3 scripts/convert_dataset.py train-00000-of-00001.parquet prefs.jsonl
  # a hub dataset: name, optional config, split
  python3 scripts/convert_dataset.py trl-lib/ultrafeedback_binarized prefs.jsonl --split train
  python3 scripts/convert_dataset.py openai/gsm8k gsm8k.jsonl --config main --split test
  # rename columns to the fields align reads, keep only some, first N rows
  python3 scripts/convert_dataset.py data.parquet qa.jsonl --rename instruction=question,output=answer \
      --columns question,answer --limit 1000

Each row becomes one JSON object per line, its columns the fields (lists of
{role, content} messages stay lists), UTF-8 written as is. The field names
align reads (see common/text/dataset.h): prompt/chosen/rejected[/margin]
for preferences, question/answer, prompt/completion, messages or text for
SFT, prompt or question (with answer as the reference) for prompts.
"""
import argparse
import datetime
import decimal
import json
import os
import sys


def plain(v):
    """Arrow/NumPy values -> what json.dumps writes (bytes as UTF-8 text)."""
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (datetime.date, datetime.datetime, datetime.time)):
        return v.isoformat()
    if hasattr(v, "tolist"):  # numpy scalars and arrays
        return plain(v.tolist())
    return v


def arrow_batches(path):
    """Record batches of a .parquet file, or an Arrow IPC file or stream."""
    import pyarrow as pa
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        yield from pq.ParquetFile(path).iter_batches(batch_size=1024)
        return
    with pa.memory_map(path) as src:
        try:
            reader = pa.ipc.open_file(src)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
        except pa.ArrowInvalid:  # the datasets cache writes the stream format
            src.seek(0)
            yield from pa.ipc.open_stream(src)


def hub_rows(name, config, split):
    try:
        import datasets
    except ImportError:
        sys.exit("convert_dataset: %s is not a file; loading it from the hub needs `datasets` "
                 "(pip install datasets)" % name)
    ds = datasets.load_dataset(name, config, split=split)
    if isinstance(ds, datasets.DatasetDict):
        sys.exit("convert_dataset: %s has splits %s; choose one with --split" % (name, ", ".join(ds.keys())))
    for batch in ds.with_format("arrow").iter(batch_size=1024):
        yield batch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="a .parquet or .arrow file, or a hub dataset name (owner/name)")
    ap.add_argument("output", help="the .jsonl file to write")
    ap.add_argument("--config", help="the hub dataset's configuration (e.g. main for openai/gsm8k)")
    ap.add_argument("--split", help="the hub dataset's split (e.g. train)")
    ap.add_argument("--rename", default="", help="old=new,... column renames, applied first")
    ap.add_argument("--columns", help="comma list: keep only these columns (after renaming)")
    ap.add_argument("--limit", type=int, default=0, help="write at most N rows (0 = all)")
    a = ap.parse_args()

    renames = {}
    for pair in filter(None, a.rename.split(",")):
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            sys.exit("convert_dataset: --rename %s: expected old=new" % pair)
        renames[old] = new
    keep = a.columns.split(",") if a.columns else None

    if os.path.exists(a.input):
        if not a.input.endswith((".parquet", ".arrow")):
            sys.exit("convert_dataset: %s: expected a .parquet or .arrow file (align reads .jsonl, .json, "
                     ".csv, .tsv and .xlsx itself)" % a.input)
        batches = arrow_batches(a.input)
    elif a.input.endswith((".parquet", ".arrow", ".csv", ".tsv", ".xlsx", ".jsonl", ".json")):
        sys.exit("convert_dataset: %s: no such file" % a.input)
    else:
        batches = hub_rows(a.input, a.config, a.split)

    # written next to the output and renamed at the end: a run that stops
    # (a bad column name, a damaged file) leaves no empty or half .jsonl
    # behind for sft_run to read as "no usable records"
    tmp = a.output + ".tmp"
    try:
        n = write_rows(batches, renames, keep, a.limit, tmp)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, SystemExit):
            raise
        import pyarrow as pa
        if isinstance(e, (pa.ArrowException, OSError)):
            # a Parquet file cut off in a download, an Arrow file of another
            # kind: one sentence, not pyarrow's traceback
            sys.exit("convert_dataset: %s: cannot be read as %s (%s)"
                     % (a.input, "Parquet" if a.input.endswith(".parquet") else "Arrow", str(e).split("\n")[0]))
        raise
    os.replace(tmp, a.output)
    print("convert_dataset: %s: %d rows -> %s" % (a.input, n, a.output), file=sys.stderr)


def write_rows(batches, renames, keep, limit, path):
    n = 0
    checked = False
    with open(path, "w", encoding="utf-8") as out:
        for batch in batches:
            if not checked:
                # a mistyped --rename would otherwise leave the column under
                # its old name and the records without the field align reads
                unknown = [c for c in renames if c not in batch.schema.names]
                if unknown:
                    sys.exit("convert_dataset: --rename: no column %s (the columns: %s)"
                             % (", ".join(unknown), ", ".join(batch.schema.names)))
                checked = True
            cols = [renames.get(c, c) for c in batch.schema.names]
            if keep:
                missing = [c for c in keep if c not in cols]
                if missing:
                    sys.exit("convert_dataset: no column %s (the columns: %s)" % (", ".join(missing), ", ".join(cols)))
            for row in batch.to_pylist():
                rec = {renames.get(k, k): plain(v) for k, v in row.items()}
                if keep:
                    rec = {k: rec[k] for k in keep}
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
                if limit and n >= limit:
                    break
            if limit and n >= limit:
                break
    return n


if __name__ == "__main__":
    main()
