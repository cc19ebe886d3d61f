/* ckpt_convert: convert between model formats.
 *
 *   ckpt_convert IN OUT [--type f32|f16|bf16|q8_0|q4_0|q4_k_m]
 *
 * IN is a Hugging Face model directory, a .gguf file or a .ckpt; OUT is a
 * .ckpt file, a .gguf file for llama.cpp / Ollama (--type, default f16), or
 * a directory to export a Hugging Face model into. Quantised GGUF tensors
 * are dequantised to fp32 on reading. All the work is model_load_any and
 * model_save_any; this program only parses its arguments and reports. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "chat_template.h"
#include "gguf_write.h"
#include "model_load.h"
#include "progress.h"
#include "util.h"

static const char *PROG = "ckpt_convert";

static void usage(FILE *out) {
    fprintf(out,
            "usage: ckpt_convert [--chat-template NAME] [--type TYPE] IN OUT\n"
            "\n"
            "Convert a model between formats.\n"
            "  IN   Hugging Face model directory, .gguf file, or .ckpt checkpoint\n"
            "  OUT  .ckpt checkpoint, .gguf file (llama.cpp, Ollama), or a directory to\n"
            "       write a Hugging Face model into\n"
            "\n"
            "options:\n"
            "  --type TYPE           GGUF tensor type: f32, f16 (default), bf16, q8_0, q4_0,\n"
            "                        q4_k_m (llama-quantize's recipe, no importance matrix)\n"
            "                        (norms stay f32; q4_0 keeps embeddings and head at q8_0)\n"
            "  --chat-template NAME  record this built-in chat template (chatml, llama3,\n"
            "                        gemma3, qwen2.5, ...: see README; none) instead of the\n"
            "                        one detected from IN\n"
            "  --help                show this help\n");
}

int main(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *tmpl = NULL, *type = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--chat-template")) {
            if (++i >= argc) align_die(PROG, "--chat-template needs a value");
            tmpl = argv[i];
        } else if (!strcmp(argv[i], "--type")) {
            if (++i >= argc) align_die(PROG, "--type needs a value (f32, f16, bf16, q8_0, q4_0 or q4_k_m)");
            type = argv[i];
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            usage(stderr);
            align_die(PROG, "unknown option %s", argv[i]);
        } else if (!in) {
            in = argv[i];
        } else if (!out) {
            out = argv[i];
        } else {
            usage(stderr);
            align_die(PROG, "too many arguments (expected IN OUT)");
        }
    }
    if (!in || !out) {
        usage(stderr);
        align_die(PROG, "expected two arguments, IN and OUT");
    }
    /* OUT is judged before IN is read (seconds for a real model): its kind,
     * --type against it, and the directory it goes in */
    ModelSaveFormat fmt;
    if (model_save_format(out, &fmt)) align_die_error(PROG);
    if (type && fmt != MODEL_SAVE_GGUF)
        align_die(PROG, "--type %s: OUT must be a .gguf file to take a tensor type", type);
    if (type) {
        GgufOutType t;
        if (gguf_out_type_parse(type, &t)) align_die_error(PROG);
    }
    if (fmt != MODEL_SAVE_HF_DIR) {
        /* a .ckpt or .gguf is written next to itself (a temporary, then a rename) */
        char dir[4096];
        const char *slash = strrchr(out, '/');
        if (slash) snprintf(dir, sizeof dir, "%.*s", slash == out ? 1 : (int)(slash - out), out);
        else snprintf(dir, sizeof dir, ".");
        struct stat sb;
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
            align_die(PROG, "OUT %s: the directory %s does not exist (create it first)", out, dir);
    }
    if (tmpl && strcmp(tmpl, "none") && !chat_template_export_jinja(tmpl))
        align_die(PROG, "--chat-template: unknown template \"%s\" (known: %s)", tmpl, chat_template_known_names());
    double t0 = align_now();
    ModelBundle b;
    /* two phases, read then write, each a whole-model call: the line says
     * which one runs and how long the first took */
    Progress progress;
    progress_start(&progress, PROG, "phase", 0, 2);
    progress_update(&progress, 0, "reading");
    if (model_load_any(in, &backend_cpu, 0, &b) != 0) {
        progress_break(&progress);
        align_die_error(PROG);
    }
    progress.every_n = 1;
    progress_update(&progress, 1, "writing");
    if (tmpl) {
        if (ckpt_extras_set(&b.extras.chat_template, tmpl) ||
            ckpt_extras_set(&b.extras.chat_template_jinja, chat_template_export_jinja(tmpl)))
            align_die_error(PROG);
    }
    if (model_save_as(out, &b, type) != 0) {
        progress_break(&progress);
        model_bundle_free(&b);
        align_die_error(PROG);
    }
    progress.done = 2;
    progress_finish(&progress, "done");
    const ModelConfig *c = &b.model->cfg;
    fprintf(stderr,
            "%s: wrote %s (%s, %d layers, dim %d, vocab %d, %.1fM parameters, template %s) in "
            "%.1f s\n",
            PROG, out,
            c->arch == ARCH_GPT2 ? "gpt2"
            : c->gemma == 2      ? "gemma2"
            : c->gemma == 3      ? "gemma3"
            : c->qk_norm         ? "qwen3"
            : c->phi3            ? "phi3"
            : c->qkv_bias        ? "qwen2" /* as config.json's model_type says: a Qwen2.5 is not called llama */
            : c->sliding_window > 0 ? "mistral"
                                    : "llama",
            c->n_layers, c->dim,
            c->vocab_size, b.model->n_elems / 1e6,
            b.extras.chat_template ? b.extras.chat_template : "unknown", align_now() - t0);
    /* llama.cpp's llama, qwen2 and phi3 have no sliding-window attention
     * (phi3 reads the key and switches it off), as for the files its own
     * converter writes: said once, since the outputs part past the window */
    if (fmt == MODEL_SAVE_GGUF && !c->gemma && c->sliding_window > 0)
        fprintf(stderr,
                "%s: note: llama.cpp runs its sliding window (%d tokens) as full attention, so its outputs differ "
                "from align's once a sequence is longer than that\n",
                PROG, c->sliding_window);
    model_bundle_free(&b);
    return 0;
}
