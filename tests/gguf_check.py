#!/usr/bin/env python3
"""Check a GGUF written by `ckpt_convert HF_DIR OUT.gguf --type TYPE` with the
`gguf` PyPI package's reader (tests/cli/gguf_export.sh runs it; it needs
numpy and gguf, so the shell test skips without them).

    gguf_check.py HF_DIR OUT.gguf TYPE

Independent of align's own reader: every tensor is compared with the Hugging
Face safetensors, put through what llama.cpp's convert_hf_to_gguf.py does
(the q/k row permutation for architecture "llama", the names of qwen3, phi3
and gemma2/3, Gemma's norms + 1, Phi's longrope factors, the tensor type, and for
q8_0 / q4_0 the bytes of gguf.quants.quantize, the numpy port of ggml's
reference quantizers); the tokenizer keys against tokenizer.json, the
special ids against config.json, the chat template against
tokenizer_config.json. Prints one line per failed check; exits 1 if any.
"""
import glob
import json
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
import gguf.quants as gq

fails = 0


def check(ok, what):
    global fails
    if not ok:
        fails += 1
        print("FAIL:", what)


def load_safetensors(d):
    out = {}
    for path in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            hdr = json.loads(f.read(n))
            data = f.read()
        for name, info in hdr.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            raw = np.frombuffer(data[a:b], dtype=np.uint8)
            if info["dtype"] == "BF16":
                x = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif info["dtype"] == "F16":
                x = raw.view(np.float16).astype(np.float32)
            else:
                x = raw.view(np.float32)
            out[name] = x.reshape(info["shape"])
    return out


LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


# the other families' names (convert_hf_to_gguf's tensor map)
FAMILY = {
    "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
    "self_attn.qkv_proj.weight": "attn_qkv.weight", "mlp.gate_up_proj.weight": "ffn_up.weight",
}
GEMMA = {
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}


def gguf_name(hf, gemma=False):
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if hf in top:
        return top[hf]
    parts = hf.split(".")
    rest = ".".join(parts[3:])
    name = (GEMMA.get(rest) if gemma else None) or FAMILY.get(rest) or LAYER[rest]
    return "blk.%s.%s" % (parts[2], name)


ARCH = {"qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3", "gemma2": "gemma2", "gemma3_text": "gemma3"}


def rope_theta(cfg):
    """rope_theta, or transformers 5's rope_parameters (Gemma 3: the global layers')"""
    if "rope_theta" in cfg:
        return cfg["rope_theta"]
    rp = cfg["rope_parameters"]
    return rp.get("full_attention", rp)["rope_theta"]


def permute(w, n_head, n_head_kv):
    """convert_hf_to_gguf.py LlamaModel.permute"""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    hf_dir, path, typ = sys.argv[1:4]
    cfg = json.load(open(os.path.join(hf_dir, "config.json")))
    tj = json.load(open(os.path.join(hf_dir, "tokenizer.json")))
    tc_path = os.path.join(hf_dir, "tokenizer_config.json")
    tc = json.load(open(tc_path)) if os.path.exists(tc_path) else {}
    r = gguf.GGUFReader(path)
    f = {k: v for k, v in r.fields.items()}

    def val(k):
        return f[k].contents() if k in f else None

    arch = val("general.architecture")
    want_arch = ARCH.get(cfg["model_type"], "llama")
    check(arch == want_arch, "architecture %r, want %r" % (arch, want_arch))
    gemma = arch in ("gemma2", "gemma3")
    if gemma:  # the keys Gemma2Model / Gemma3Model write
        check(val(arch + ".attention.key_length") == cfg["head_dim"], "key_length")
        check(val(arch + ".attention.sliding_window") == cfg["sliding_window"], "sliding_window")
        for k in ("attn_logit_softcapping", "final_logit_softcapping"):
            check((val(arch + "." + k) or None) == cfg.get(k), k)
    if arch == "phi3" and cfg.get("rope_parameters", {}).get("rope_type") == "longrope":
        rp = cfg["rope_parameters"]
        t = {t.name: t for t in r.tensors}
        for k in ("long", "short"):
            got = t.get("rope_factors_%s.weight" % k)
            check(got is not None and np.array_equal(np.asarray(got.data), np.array(rp[k + "_factor"], np.float32)),
                  "rope_factors_%s equal %s_factor" % (k, k))
        check(val("phi3.rope.scaling.original_context_length") == cfg["original_max_position_embeddings"],
              "rope.scaling.original_context_length")
    check(val(arch + ".block_count") == cfg["num_hidden_layers"], "block_count")
    check(val(arch + ".embedding_length") == cfg["hidden_size"], "embedding_length")
    check(val(arch + ".feed_forward_length") == cfg["intermediate_size"], "feed_forward_length")
    check(val(arch + ".attention.head_count") == cfg["num_attention_heads"], "head_count")
    check(val(arch + ".attention.head_count_kv") == cfg["num_key_value_heads"], "head_count_kv")
    check(abs(val(arch + ".rope.freq_base") - rope_theta(cfg)) <= 1e-6 * rope_theta(cfg), "rope.freq_base")
    check(abs(val(arch + ".attention.layer_norm_rms_epsilon") - cfg["rms_norm_eps"]) < 1e-9, "rms eps")

    # tokenizer
    V = cfg["vocab_size"]
    want_toks = ["[PAD%d]" % i for i in range(V)]
    want_types = [5] * V
    for t, i in tj["model"]["vocab"].items():
        want_toks[i], want_types[i] = t, 1
    for a in tj["added_tokens"]:
        want_toks[a["id"]], want_types[a["id"]] = a["content"], 3 if a["special"] else 4
    check(val("tokenizer.ggml.model") == "gpt2", "tokenizer.ggml.model")
    check(val("tokenizer.ggml.tokens") == want_toks, "tokenizer.ggml.tokens equal tokenizer.json's vocabulary by id")
    check(list(val("tokenizer.ggml.token_type")) == want_types, "token_type (normal, control, user-defined, unused)")
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    check(val("tokenizer.ggml.merges") == merges, "merges in rank order")
    check(val("tokenizer.ggml.bos_token_id") == cfg["bos_token_id"], "bos id")
    check(val("tokenizer.ggml.eos_token_id") == cfg["eos_token_id"], "eos id")
    if "chat_template" in tc:
        check(val("tokenizer.chat_template") == tc["chat_template"], "chat template = tokenizer_config.json's")

    # tensors
    hf = load_safetensors(hf_dir)
    if cfg.get("tie_word_embeddings"):
        hf.pop("lm_head.weight", None)
    tensors = {t.name: t for t in r.tensors if not t.name.startswith("rope_factors_")}
    check(len(tensors) == len(hf), "%d tensors, want %d" % (len(tensors), len(hf)))
    for name, w in hf.items():
        g = gguf_name(name, gemma)
        if gemma and name.endswith("norm.weight"):  # Gemma's RMSNorm scales by 1 + w: the converter adds 1
            w = w + np.float32(1)
        t = tensors.get(g)
        check(t is not None, "tensor %s (%s) missing" % (g, name))
        if t is None:
            continue
        if arch == "llama" and name.endswith("q_proj.weight"):
            w = permute(w, cfg["num_attention_heads"], cfg["num_attention_heads"])
        elif arch == "llama" and name.endswith("k_proj.weight"):
            w = permute(w, cfg["num_attention_heads"], cfg["num_key_value_heads"])
        w = np.ascontiguousarray(w, dtype=np.float32)
        check(list(reversed([int(x) for x in t.shape])) == list(w.shape) or (w.ndim == 1 and int(t.shape[0]) == w.shape[0]),
              "%s shape %s vs %s" % (g, list(t.shape), list(w.shape)))
        if w.ndim == 1 or typ == "f32":
            want = T.F32
        elif typ == "bf16":
            want = T.BF16
        elif typ == "f16" or w.shape[1] % 32:
            want = T.F16
        elif typ == "q8_0" or (typ == "q4_0" and g in ("token_embd.weight", "output.weight")):
            want = T.Q8_0
        elif typ == "q4_0":
            want = T.Q4_0
        else:  # q4_k_m: llama-quantize's llama_tensor_get_type for Q4_K_M
            n = cfg["num_hidden_layers"]
            layer = int(g.split(".")[1]) if g.startswith("blk.") else -1
            more = layer >= 0 and (layer < n // 8 or layer >= 7 * n // 8 or (layer - n // 8) % 3 == 2)
            tied = "output.weight" not in tensors  # then token_embd is the head
            big = g == "output.weight" or (tied and g == "token_embd.weight") or (more and (".attn_v." in g or ".ffn_down." in g))
            if w.shape[1] % 256:
                want = T.Q8_0 if big else T.Q5_0
            else:
                want = T.Q6_K if big else T.Q4_K
        check(t.tensor_type == want, "%s type %s, want %s" % (g, t.tensor_type.name, want.name))
        if t.tensor_type != want:
            continue
        raw = np.asarray(t.data)
        if want == T.F32:
            ok = np.array_equal(raw.reshape(w.shape), w)
        elif want == T.F16:
            ok = np.array_equal(raw.reshape(w.shape), w.astype(np.float16))
        elif want == T.BF16:
            ok = np.array_equal(gq.dequantize(raw, want).reshape(w.shape), gq.dequantize(gq.quantize(w, want), want).reshape(w.shape))
        elif want in (T.Q4_K, T.Q6_K):  # the gguf package has no K-quant quantizer: values within a step
            got = gq.dequantize(raw, want).reshape(w.shape)
            ok = np.abs(got - w).max() <= 0.15 * np.abs(w).max()
        else:
            ok = np.array_equal(raw.reshape(-1).view(np.uint8), gq.quantize(w, want).reshape(-1).view(np.uint8))
        check(ok, "%s data equals convert_hf_to_gguf's %s" % (g, want.name))
    print("%s (%s): %d checks failed" % (os.path.basename(path), typ, fails))
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
