/* model_init: a new model with random weights, ready for sft_run --mode
 * pretrain or sft_run, so training from scratch needs no download.
 *
 * The tokenizer is the built-in byte-level one (--tokenizer byte: 256 byte
 * tokens plus <|endoftext|>, <|im_start|>, <|im_end|>), or taken from a
 * tokenizer.json / Hugging Face directory / GPT-2 encoder.json+vocab.bpe
 * directory. Weights follow GPT-2's initialisation (model_init_random). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "chat_template.h"
#include "model_load.h"
#include "util.h"

static Tokenizer *load_tokenizer(const char *spec) {
    if (!strcmp(spec, "byte")) {
        static const char *specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
        Tokenizer *t = tok_byte_level(specials, 3);
        if (t) tok_set_special_ids(t, -1, 258 /* <|im_end|> ends a turn */, 256);
        return t;
    }
    struct stat st;
    if (stat(spec, &st) != 0) {
        align_errorf("--tokenizer %s: no such file or directory", spec);
        return NULL;
    }
    if (!S_ISDIR(st.st_mode)) return tok_load_hf_file(spec);
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/tokenizer.json", spec);
    if (stat(a, &st) == 0) return tok_load_hf_file(a);
    snprintf(a, sizeof a, "%s/encoder.json", spec);
    snprintf(b, sizeof b, "%s/vocab.bpe", spec);
    return tok_load_gpt2_files(a, b);
}

int main(int argc, char **argv) {
    const char *arch = "llama", *tokenizer = "byte", *out = NULL, *tmpl = "chatml";
    int dim = 128, layers = 4, heads = 4, kv_heads = 0, ffn = 0, max_seq = 1024, seed = 1;
    float theta = 10000.0f;
    CliFlag flags[] = {
        {"arch", CLI_STRING, &arch, "llama (RMSNorm, RoPE, SwiGLU, GQA) or gpt2"},
        {"dim", CLI_INT, &dim, "hidden size", CLI_AT_LEAST_1},
        {"layers", CLI_INT, &layers, "transformer blocks", CLI_AT_LEAST_1},
        {"heads", CLI_INT, &heads, "attention heads", CLI_AT_LEAST_1},
        {"kv-heads", CLI_INT, &kv_heads, "key/value heads (default: heads; llama only)", CLI_NONNEG},
        {"ffn", CLI_INT, &ffn, "MLP inner size (default 4*dim for gpt2, 8/3*dim rounded to 32 for llama)", CLI_NONNEG},
        {"max-seq-len", CLI_INT, &max_seq, "positions (gpt2's table size)", CLI_AT_LEAST_1},
        {"rope-theta", CLI_FLOAT, &theta, "RoPE base (llama)", CLI_POSITIVE},
        {"tokenizer", CLI_STRING, &tokenizer, "byte, a tokenizer.json, or a directory holding one (or GPT-2's encoder.json + vocab.bpe)"},
        {"chat-template", CLI_STRING, &tmpl, "chatml, llama3, hh or none"},
        {"seed", CLI_INT, &seed, "seed for the weights", CLI_ANY},
        {"out", CLI_STRING, &out, "where to write it (.ckpt, or a directory for Hugging Face)"},
    };
    CliSpec spec = {.prog = "model_init", .usage = "model_init --out init.ckpt [flags]",
                    .about = "Create a model with random weights and a tokenizer, to train from scratch.",
                    .flags = flags, .n_flags = sizeof flags / sizeof *flags};
    cli_parse_or_exit(&spec, argc, argv);
    if (!out) align_die("model_init", "--out is required (see --help)");
    if (dim % heads) cli_usage_error(&spec, "--dim %d must be a multiple of --heads %d", dim, heads);
    if (kv_heads > 0 && heads % kv_heads)
        cli_usage_error(&spec, "--heads %d must be a multiple of --kv-heads %d (each key/value head serves a group)", heads, kv_heads);
    ChatTemplate parsed;
    if (chat_template_from_name(tmpl, &parsed)) align_die("model_init", "--chat-template %s: expected chatml, llama3, hh or none", tmpl);

    Tokenizer *tok = load_tokenizer(tokenizer);
    if (!tok) align_die_error("model_init");
    ModelConfig c;
    model_config_defaults(&c, strcmp(arch, "gpt2") ? ARCH_LLAMA : ARCH_GPT2);
    if (strcmp(arch, "gpt2") && strcmp(arch, "llama")) align_die("model_init", "--arch %s: expected llama or gpt2", arch);
    c.vocab_size = tok_vocab_size(tok);
    c.dim = dim, c.n_layers = layers, c.n_heads = heads, c.head_dim = dim / heads;
    c.n_kv_heads = c.arch == ARCH_LLAMA && kv_heads > 0 ? kv_heads : heads;
    c.ffn_dim = ffn > 0 ? ffn : c.arch == ARCH_GPT2 ? 4 * dim : ((8 * dim / 3 + 31) / 32) * 32;
    c.max_seq_len = max_seq, c.rope_theta = theta, c.tied_embeddings = 1;
    c.bos_id = tok_bos_id(tok), c.eos_id = tok_eos_id(tok), c.pad_id = tok_pad_id(tok);
    ModelBundle b = {0};
    ckpt_extras_init(&b.extras);
    b.model = model_create(&c, &backend_cpu);
    if (!b.model) align_die_error("model_init");
    model_init_random(b.model, (uint64_t)seed);
    char *json = tok_to_hf_json(tok);
    if (!json || ckpt_extras_set(&b.extras.tokenizer_json, json) ||
        (strcmp(tmpl, "none") && (ckpt_extras_set(&b.extras.chat_template, tmpl) ||
                                  ckpt_extras_set(&b.extras.chat_template_jinja, chat_template_export_jinja(tmpl)))))
        align_die_error("model_init");
    free(json);
    if (model_save_any(out, &b)) align_die_error("model_init");
    fprintf(stderr, "model_init: %s model, %zu parameters, vocabulary %d, saved %s\n", arch, b.model->n_elems, c.vocab_size, out);
    model_bundle_free(&b);
    tok_free(tok);
    return 0;
}
