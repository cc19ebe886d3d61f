/* model_load: the one place that decides what a model path is. A path that
 * names a directory is a Hugging Face model; otherwise the extension
 * decides (.ckpt, .gguf), and failing that the file's first bytes (GGUF
 * magic, or a safetensors header). */
#include "model_load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "gguf.h"
#include "gguf_write.h"
#include "hf_export.h"
#include "hf_import.h"
#include "lora.h"
#include "peft_prompt.h"
#include "util.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A tokenizer belongs to the model when every id it makes has an embedding
 * row, and the model's rows beyond it are no more than the padding Hugging
 * Face models carry (vocab_size rounded up for the matmuls: Qwen2 151665 ->
 * 151936, Pythia 50277 -> 50304, Phi-3 32011 -> 32064): at most 128 rows
 * or 1/64 of the tokenizer. A bigger gap means a tokenizer from another
 * model, whose ids would pick the wrong rows without any error. */
static int check_vocab(const char *path, const Tokenizer *tok, const Model *m) {
    int t = tok_vocab_size(tok), v = m->cfg.vocab_size;
    if (t > v)
        return align_errorf("%s: the tokenizer has %d tokens but the model's vocabulary has %d rows: ids %d and up "
                            "have no embedding (a tokenizer from another model?)", path, t, v, v);
    int pad = t / 64 > 128 ? t / 64 : 128;
    if (v - t > pad)
        return align_errorf("%s: the tokenizer has %d tokens but the model's vocabulary has %d rows, more than "
                            "padding (a tokenizer from another model?)", path, t, v);
    return 0;
}

int model_load_note_source(ModelBundle *b, const char *path) {
    if (b->extras.base_model) return 0;
    char *abs = realpath(path, NULL);
    int rc = ckpt_extras_set(&b->extras.base_model, abs ? abs : path);
    free(abs);
    return rc;
}

int model_load_any(const char *path, const Backend *be, int flags, ModelBundle *out) {
    return model_load_any_quant(path, be, flags, 0, out);
}

int model_load_any_quant(const char *path, const Backend *be, int flags, int qtype, ModelBundle *out) {
    memset(out, 0, sizeof *out);
    ckpt_extras_init(&out->extras);
    struct stat sb;
    if (stat(path, &sb) != 0) return align_errorf("model path %s does not exist", path);
    int rc;
    if (S_ISDIR(sb.st_mode)) {
        rc = hf_import_dir_quant(path, be, qtype, out);
    } else {
        /* the first bytes decide over the name: a GGUF renamed x.ckpt is a
         * GGUF, and a PyTorch checkpoint (a zip of pickles, or a bare
         * pickle) named .ckpt as Lightning and Stable Diffusion name theirs
         * is said to be one, not "not a safetensors file: header length
         * 8680820738615364432" */
        unsigned char magic[4] = {0};
        FILE *f = fopen(path, "rb");
        if (f) {
            if (fread(magic, 1, 4, f) != 4) magic[0] = 0;
            fclose(f);
        }
        int is_gguf = ends_with(path, ".gguf") || memcmp(magic, "GGUF", 4) == 0;
        if (!is_gguf && (!memcmp(magic, "PK\3\4", 4) || (magic[0] == 0x80 && magic[1] >= 2 && magic[1] <= 5)))
            return align_errorf("%s is a PyTorch checkpoint (pickle), which align does not read: save the model "
                                "with transformers' save_pretrained (safetensors) and pass that directory",
                                path);
        if (is_gguf)
            rc = qtype                           ? gguf_import_quant(path, be, qtype, out)
                 : flags & MODEL_LOAD_GGUF_BLOCKS ? gguf_import_blocks(path, be, out)
                                                  : gguf_import(path, be, out);
        else rc = ckpt_load_quant(path, be, qtype, &out->model, &out->extras);
    }
    if (rc != 0) return -1;
    /* a prompt- or prefix-tuned .ckpt carries its virtual tokens: they apply */
    if (peft_prompt_from_extras(out->model, &out->extras) < 0) {
        align_error_prefix("%s", path);
        model_bundle_free(out);
        return -1;
    }
    if (model_load_note_source(out, path)) {
        model_bundle_free(out);
        return -1;
    }
    if ((flags & MODEL_LOAD_TOKENIZER) && !out->tok) {
        if (!out->extras.tokenizer_json) {
            model_bundle_free(out);
            return align_errorf("%s has no tokenizer", path);
        }
        out->tok = tok_load_hf_json(out->extras.tokenizer_json, strlen(out->extras.tokenizer_json),
                                    path);
        if (!out->tok) {
            model_bundle_free(out);
            return -1;
        }
    }
    if (out->tok && check_vocab(path, out->tok, out->model)) {
        model_bundle_free(out);
        return -1;
    }
    return 0;
}

static int ends_with_ci(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

int model_save_format(const char *path, ModelSaveFormat *fmt) {
    if (ends_with_ci(path, ".ckpt")) {
        *fmt = MODEL_SAVE_CKPT;
        return 0;
    }
    if (ends_with_ci(path, ".gguf")) {
        *fmt = MODEL_SAVE_GGUF;
        return 0;
    }
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        *fmt = MODEL_SAVE_HF_DIR;
        return 0;
    }
    /* one file of a format align does not write as one file: without this
     * check "out.safetensors" became a directory holding model.safetensors */
    static const char *const FILE_EXTS[] = {".safetensors", ".bin", ".pt", ".pth", ".onnx", ".ggml", ".h5",
                                            ".msgpack", ".npz", ".json", ".jsonl", ".txt", ".zip", ".gz",
                                            ".tar", ".csv"};
    for (size_t i = 0; i < sizeof FILE_EXTS / sizeof *FILE_EXTS; i++)
        if (ends_with_ci(path, FILE_EXTS[i]))
            return align_errorf("%s: names a %s file; align writes a .ckpt, a .gguf (llama.cpp, Ollama) or a "
                                "Hugging Face model as a directory (config.json, model.safetensors, tokenizer): "
                                "give one of those names",
                                path, FILE_EXTS[i]);
    *fmt = MODEL_SAVE_HF_DIR;
    return 0;
}

int model_save_any(const char *path, ModelBundle *b) { return model_save_as(path, b, NULL); }

int model_save_as(const char *path, ModelBundle *b, const char *gguf_type) {
    ModelSaveFormat fmt;
    if (model_save_format(path, &fmt)) return -1;
    if (b->model->prompt && fmt != MODEL_SAVE_CKPT)
        return align_errorf("%s: a model with %s-tuning virtual tokens is saved as a .ckpt (or as a peft adapter); "
                            "Hugging Face and GGUF files have no place for them", path,
                            prompt_kind_name(model_prompt_config(b->model)->kind));
    if (fmt == MODEL_SAVE_GGUF) {
        /* f16 by default, as convert_hf_to_gguf.py's default output */
        GgufOutType t = GGUF_OUT_F16;
        if (gguf_type && gguf_out_type_parse(gguf_type, &t)) return -1;
        return gguf_write(path, b, t);
    }
    if (gguf_type) return align_errorf("%s: a GGUF type (%s) applies to a .gguf output only", path, gguf_type);
    if (fmt == MODEL_SAVE_CKPT) return ckpt_save(path, b->model, &b->extras);
    return hf_export_dir(path, b->model, &b->extras);
}

int model_save_merged(const char *path, ModelBundle *b) {
    Model *e = model_export_copy(b->model);
    if (!e) return -1;
    ModelBundle tmp = *b;
    tmp.model = e;
    int rc = model_save_any(path, &tmp);
    model_free(e);
    return rc;
}
