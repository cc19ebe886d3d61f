#!/usr/bin/env python3
"""Write the fuzz targets' seed corpora into tests/fuzz/corpus/<target>/.

    python3 tests/fuzz/make_corpus.py [BIN_DIR]

Standard library only. Every seed is small and valid (or nearly so) so the
fuzzer starts from inputs that reach deep into each parser:

  fuzz_dataset      one JSONL record per file, every record shape dataset.h
                    lists (preference strings/messages, implicit hh prompt,
                    SFT messages/question-answer/prompt-completion/text,
                    prompt-only, UltraFeedback scores, margin, unicode)
  fuzz_tokenizer    the three tiny fixtures' tokenizer.json files and a
                    minimal hand-written one
  fuzz_safetensors  a tiny F32/F16/BF16 file with __metadata__
  fuzz_gguf         a tiny GGUF v3 with F32, F16, BF16, Q8_0, Q4_0, Q4_1
                    tensors and typed metadata
  fuzz_wire         score requests (tokens+offsets, texts, prompts+responses)
  fuzz_ckpt         a .ckpt of tests/fixtures/hf_tiny_qwen2, made with
                    BIN_DIR/ckpt_convert (default build/bin) when it exists,
                    plus its first 4 KB
Deterministic: rerunning rewrites the same bytes.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(ROOT, "tests", "fixtures")
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def dataset():
    m = lambda role, content: {"role": role, "content": content}
    recs = {
        "pref_strings": {"prompt": "What is the capital of France?", "chosen": "Paris.",
                         "rejected": "London, of course."},
        "pref_messages": {"prompt": [m("user", "Count to three")],
                          "chosen": [m("assistant", "one two three")],
                          "rejected": [m("assistant", "three two one")], "margin": 0.5},
        "pref_implicit_hh": {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?",
                             "rejected": "\n\nHuman: Hi there\n\nAssistant: Go away."},
        "pref_implicit_msgs": {"chosen": [m("system", "Be kind."), m("user", "Hi"), m("assistant", "Hello!")],
                               "rejected": [m("system", "Be kind."), m("user", "Hi"), m("assistant", "What.")],
                               "score_chosen": 8.5, "score_rejected": 2},
        "sft_messages": {"messages": [m("system", "S"), m("user", "U1"), m("assistant", "A1"),
                                      m("user", "U2"), m("assistant", "A2 <|im_end|> 42")]},
        "sft_qa": {"question": "2+2?", "answer": "4"},
        "sft_prompt_completion": {"prompt": "Say hi", "completion": " hi \u4f60\u597d \U0001F600"},
        "sft_text": {"text": "Plain pretraining text, digits 12345 and   spaces."},
        "kto_unpaired": {"prompt": [m("user", "Hi")], "completion": [m("assistant", "Go away.")], "label": False},
        "prompt_only": {"prompt": [m("user", "Tell a joke")]},
        "prompt_messages_trailing": {"messages": [m("user", "Q"), m("assistant", "dropped")]},
    }
    for name, r in recs.items():
        put("fuzz_dataset", name + ".json", json.dumps(r, ensure_ascii=False))


def table():
    # the table fixtures, each behind fuzz_table's format byte (0 CSV, 1 TSV, 2 xlsx, 3 xlsx --sheet qa)
    tab = os.path.join(FIX, "tables")
    for byte, name in [(0, "qa.csv"), (0, "kto.csv"), (1, "prefs.tsv"), (2, "prefs.xlsx"), (3, "prefs.xlsx"), (2, "bad.xlsx")]:
        with open(os.path.join(tab, name), "rb") as f:
            put("fuzz_table", "%d_%s" % (byte, name), bytes([byte]) + f.read())


def tokenizer():
    for d in ("hf_tiny_gpt2", "hf_tiny_llama", "hf_tiny_qwen2"):
        shutil.copyfile(os.path.join(FIX, d, "tokenizer.json"),
                        os.path.join(CORPUS, "fuzz_tokenizer", d + ".json"))
    # GPT-2's byte alphabet as the vocabulary, two merges, a split pattern,
    # added tokens (special and not)
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    alphabet = sorted(zip(bs, cs))
    vocab = {chr(c): i for i, (_, c) in enumerate(alphabet)}
    vocab["he"] = 256
    vocab["hel"] = 257
    tj = {"version": "1.0", "added_tokens": [
        {"id": 258, "content": "<|im_end|>", "special": True, "normalized": False},
        {"id": 259, "content": "[X]", "special": False, "normalized": False}],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "\\p{N}"}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "unk_token": None, "vocab": vocab, "merges": ["h e", "he l"]}}
    put("fuzz_tokenizer", "minimal.json", json.dumps(tj, ensure_ascii=False))


def safetensors():
    data = struct.pack("<4f", 1, -2, 0.5, 3) + struct.pack("<3e", 1, -1, 0.25) + b"\x80\x3f\x00\xc0"
    hdr = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
           "b": {"dtype": "F16", "shape": [3], "data_offsets": [16, 22]},
           "c": {"dtype": "BF16", "shape": [2], "data_offsets": [22, 26]},
           "__metadata__": {"config": "{\"model_type\": \"llama\"}", "format": "pt"}}
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    put("fuzz_safetensors", "tiny.safetensors", struct.pack("<Q", len(h)) + h + data)


def gguf():
    def s(x):
        x = x.encode()
        return struct.pack("<Q", len(x)) + x
    kv = b""
    kv += s("general.architecture") + struct.pack("<I", 8) + s("llama")
    kv += s("general.alignment") + struct.pack("<II", 4, 32)
    kv += s("llama.block_count") + struct.pack("<II", 4, 1)
    kv += s("llama.rope.freq_base") + struct.pack("<If", 6, 10000.0)
    kv += s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + s("a") + s("b")
    n_kv = 5
    f16 = struct.pack("<e", 0.5)
    blocks = [
        ("t.f32", [4], 0, struct.pack("<4f", 1, 2, 3, 4)),
        ("t.f16", [4], 1, struct.pack("<4e", 1, 2, 3, 4)),
        ("t.q4_0", [32], 2, f16 + bytes(range(16))),
        ("t.q4_1", [32], 3, f16 + struct.pack("<e", -1) + bytes(range(16, 32))),
        ("t.q8_0", [32, 2], 8, (f16 + bytes(range(32))) * 2),
        ("t.bf16", [4], 30, b"\x80\x3f\x00\x40\x40\x40\x80\x40"),
    ]
    infos, data = b"", b""
    for name, dims, typ, raw in blocks:
        data += b"\0" * (-len(data) % 32)
        infos += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", typ, len(data))
        data += raw
    out = b"GGUF" + struct.pack("<IQQ", 3, len(blocks), n_kv) + kv + infos
    out += b"\0" * (-len(out) % 32)
    put("fuzz_gguf", "tiny.gguf", out + data)


def mp(x):
    """A minimal msgpack encoder (str, bytes, int, list, dict)."""
    if isinstance(x, dict):
        return bytes([0x80 | len(x)]) + b"".join(mp(k) + mp(v) for k, v in x.items())
    if isinstance(x, list):
        return bytes([0x90 | len(x)]) + b"".join(mp(v) for v in x)
    if isinstance(x, str):
        b = x.encode()
        return (bytes([0xA0 | len(b)]) if len(b) < 32 else bytes([0xD9, len(b)])) + b
    if isinstance(x, bytes):
        return bytes([0xC4, len(x)]) + x
    if isinstance(x, int):
        return bytes([x]) if 0 <= x < 128 else b"\xd3" + struct.pack(">q", x)
    raise TypeError(x)


def wire():
    arr = lambda dt, fmt, v: {"dtype": dt, "shape": [len(v)], "data": struct.pack("<%d%s" % (len(v), fmt), *v)}
    put("fuzz_wire", "score_tokens.msgpack", mp({
        "op": "score", "v": 1, "id": 7, "tokens": arr("i32", "i", [5, 6, 7, 8, 9]),
        "offsets": arr("i64", "q", [0, 2, 5])}))
    put("fuzz_wire", "score_prompt_tokens.msgpack", mp({
        "op": "score", "v": 1, "id": 8, "tokens": arr("i32", "i", [1, 2, 3]), "offsets": arr("i64", "q", [0, 1, 3]),
        "prompt_tokens": arr("i32", "i", [4, 4]), "prompt_offsets": arr("i32", "i", [0, 1, 2])}))
    put("fuzz_wire", "score_texts.msgpack", mp({"op": "score", "v": 1, "texts": ["hello", "world"]}))
    put("fuzz_wire", "score_pairs.msgpack", mp({"op": "score", "v": 1, "id": 3, "prompts": ["Q?"],
                                                "responses": ["A."]}))
    put("fuzz_wire", "scores_reply.msgpack", mp({"op": "scores", "v": 1, "id": 3,
                                                 "scores": arr("f32", "f", [0.5, -1.0])}))


def ckpt(bin_dir):
    conv = os.path.join(bin_dir, "ckpt_convert")
    if not os.access(conv, os.X_OK):
        print("note: %s not built; fuzz_ckpt seeds left as they are" % conv)
        return
    with tempfile.TemporaryDirectory() as t:
        out = os.path.join(t, "tiny.ckpt")
        subprocess.run([conv, os.path.join(FIX, "hf_tiny_qwen2"), out], check=True,
                       stdout=subprocess.DEVNULL)
        raw = open(out, "rb").read()
    put("fuzz_ckpt", "tiny_qwen2.ckpt", raw)
    put("fuzz_ckpt", "tiny_qwen2_head4k.ckpt", raw[:4096])


def main():
    bin_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "bin")
    os.makedirs(os.path.join(CORPUS, "fuzz_tokenizer"), exist_ok=True)
    dataset()
    table()
    tokenizer()
    safetensors()
    gguf()
    wire()
    ckpt(bin_dir)
    for d in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, d))
        size = sum(os.path.getsize(os.path.join(CORPUS, d, f)) for f in files)
        print("%-18s %2d files %7d bytes" % (d, len(files), size))


if __name__ == "__main__":
    main()
