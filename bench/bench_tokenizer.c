/* bench_tokenizer: single-threaded encode throughput (MB/s) of the BPE
 * tokenizer.
 *
 * The text is split into documents of about 2 KB at line ends and each is
 * encoded by its own tok_encode call, as a dataset loader does. "cold" is the
 * first pass over the text on a fresh tokenizer (piece cache empty), "warm"
 * the best of the following passes. The default text is synthetic but
 * varied and deterministic (English-like prose with Zipf word frequencies,
 * code, numbers, CJK, emoji, white-space runs); --text FILE measures a real
 * file instead, --dump-text FILE writes the synthetic text so that another
 * tokenizer (bench/tokenizer_vs_hf.py) can be run on the same bytes.
 * Prints one JSON object. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tokenizer.h"
#include "util.h"

static const char *USAGE =
    "bench_tokenizer [--gpt2-dir DIR | --tokenizer-json FILE] [--text FILE | --mb N] [--dump-text FILE] [--passes N]";

static uint64_t rng = 0x243F6A8885A308D3ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static const char *WORDS[] = {
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on",
    "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you",
    "were", "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will",
    "would", "who", "so", "no", "model", "training", "reward", "policy", "gradient", "language", "human",
    "preference", "learning", "optimization", "dataset", "evaluation", "assistant", "question", "answer",
    "because", "through", "between", "important", "different", "government", "university", "information",
    "development", "international", "particularly", "approximately", "nevertheless", "responsibility",
    "tokenizer", "throughput", "benchmark", "reinforcement", "alignment", "distribution", "probability",
    "it's", "don't", "we're", "they'll", "I'm", "you've", "he'd", "can't", "won't", "isn't",
};

static void append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *buf = realloc(*buf, *cap);
        if (!*buf) align_die("bench_tokenizer", "out of memory");
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
}
static void append_str(char **buf, size_t *len, size_t *cap, const char *s) { append(buf, len, cap, s, strlen(s)); }
#define APPEND_STR(s) append_str(&buf, &len, &cap, (s))  /* s is evaluated once */

static char *synthetic_text(size_t bytes, size_t *out_len) {
    size_t nw = sizeof WORDS / sizeof *WORDS, len = 0, cap = bytes + 4096;
    char *buf = malloc(cap), tmp[256];
    static const char *CJK[] = {"我们", "今天", "天气", "很好", "模型", "训练", "数据", "東京", "日本語", "テキスト", "한국어"};
    static const char *EMOJI[] = {"😀", "👍🏽", "🎉", "❤️", "🇫🇷", "✨"};
    static const char *CODE[] = {
        "def f(x):\n    return x ** 2  # square\n",
        "for (int i = 0; i < n; i++) {\n\tsum += a[i] * b[i];\n}\n",
        "    if self.cache is None:\n        self.cache = {}\n",
        "{\"prompt\": \"What is 2+2?\", \"chosen\": \"4\", \"rejected\": \"5\"}\n",
        "        x = torch.zeros((batch, seq_len), dtype=torch.long)\n",
    };
    while (len < bytes) {
        int kind = (int)(rnd() % 100);
        if (kind < 70) {  /* a paragraph of prose */
            int sentences = 2 + (int)(rnd() % 5);
            for (int s = 0; s < sentences; s++) {
                int words = 5 + (int)(rnd() % 18);
                for (int w = 0; w < words; w++) {
                    /* skewed to the frequent words, as text is (u^3 of a uniform u) */
                    double u = (rnd() + 0.5) / 4294967296.0;
                    size_t r = (size_t)(u * u * u * (double)nw) % nw;
                    const char *word = WORDS[r];
                    if (w == 0) {
                        snprintf(tmp, sizeof tmp, "%c%s", word[0] >= 'a' && word[0] <= 'z' ? word[0] - 32 : word[0],
                                 word + 1);
                        APPEND_STR(tmp);
                    } else {
                        APPEND_STR(" ");
                        APPEND_STR(word);
                    }
                    int x = (int)(rnd() % 100);
                    if (x < 4) {
                        snprintf(tmp, sizeof tmp, " %u", rnd() % 100000);
                        APPEND_STR(tmp);
                    } else if (x < 7) {
                        APPEND_STR(",");
                    } else if (x < 8) {
                        snprintf(tmp, sizeof tmp, " (%s)", WORDS[rnd() % nw]);
                        APPEND_STR(tmp);
                    }
                }
                APPEND_STR(rnd() % 8 == 0 ? "?" : ".");
                if (s + 1 < sentences) APPEND_STR(" ");
            }
            APPEND_STR("\n\n");
        } else if (kind < 85) {
            APPEND_STR(CODE[rnd() % (sizeof CODE / sizeof *CODE)]);
        } else if (kind < 93) {
            for (int i = 0, n = 3 + (int)(rnd() % 10); i < n; i++) APPEND_STR(CJK[rnd() % (sizeof CJK / sizeof *CJK)]);
            APPEND_STR("。\n");
        } else if (kind < 97) {
            APPEND_STR(WORDS[rnd() % nw]);
            APPEND_STR(" ");
            APPEND_STR(EMOJI[rnd() % (sizeof EMOJI / sizeof *EMOJI)]);
            APPEND_STR("\n");
        } else {
            int n = 2 + (int)(rnd() % 30);
            for (int i = 0; i < n; i++) APPEND_STR(rnd() % 4 ? " " : "\t");
            APPEND_STR("\n\r\n");
        }
    }
    *out_len = len;
    return buf;
}

int main(int argc, char **argv) {
    const char *gpt2_dir = NULL, *hf_json = NULL, *text_path = NULL, *dump = NULL;
    float mb = 4;
    int passes = 4;
    CliFlag flags[] = {
        {"gpt2-dir", CLI_STRING, &gpt2_dir, "encoder.json + vocab.bpe (default " ALIGN_GPT2_DIR ")"},
        {"tokenizer-json", CLI_STRING, &hf_json, "a Hugging Face tokenizer.json instead"},
        {"text", CLI_STRING, &text_path, "text to encode (default: synthetic, --mb MB of it)"},
        {"mb", CLI_FLOAT, &mb, "megabytes of synthetic text", CLI_POSITIVE},
        {"dump-text", CLI_STRING, &dump, "write the text used and exit"},
        {"passes", CLI_INT, &passes, "passes over the text, 2 or more (the first is reported as cold)", CLI_AT_LEAST_1},
    };
    CliSpec spec = {.prog = "bench_tokenizer", .usage = USAGE, .about = "Tokenizer encode throughput, cold and warm; prints JSON.",
                    .flags = flags, .n_flags = sizeof flags / sizeof *flags};
    cli_parse_or_exit(&spec, argc, argv);
    if (passes < 2) cli_usage_error(&spec, "--passes %d: expected 2 or more (the first pass is reported apart, as cold)", passes);
    size_t len;
    char *text = text_path ? align_read_file(text_path, &len) : synthetic_text((size_t)(mb * 1e6), &len);
    if (!text) align_die_error("bench_tokenizer");
    if (dump) {
        FILE *f = fopen(dump, "wb");
        if (!f || fwrite(text, 1, len, f) != len || fclose(f) != 0)
            align_die("bench_tokenizer", "cannot write %s", dump);
        return 0;
    }
    char enc[8192], voc[8192];
    if (!hf_json) {
        if (!gpt2_dir) gpt2_dir = ALIGN_GPT2_DIR;
        snprintf(enc, sizeof enc, "%s/encoder.json", gpt2_dir);
        snprintf(voc, sizeof voc, "%s/vocab.bpe", gpt2_dir);
    }
    /* documents of ~2 KB, cut after a newline */
    size_t n_docs = 0, *doc_start = malloc((len / 1024 + 2) * sizeof *doc_start);
    for (size_t p = 0; p < len;) {
        doc_start[n_docs++] = p;
        size_t q = p + 2048 < len ? p + 2048 : len;
        while (q < len && text[q - 1] != '\n') q++;
        p = q;
    }
    doc_start[n_docs] = len;

    double t0 = align_now();
    Tokenizer *t = hf_json ? tok_load_hf_file(hf_json) : tok_load_gpt2_files(enc, voc);
    if (!t) align_die_error("bench_tokenizer");
    double load_s = align_now() - t0, cold = 0, warm = 1e30;
    long tokens = 0;
    for (int pass = 0; pass < passes; pass++) {
        long nt = 0;
        double s = align_now();
        for (size_t d = 0; d < n_docs; d++) {
            int32_t *ids;
            int n;
            if (tok_encode(t, text + doc_start[d], doc_start[d + 1] - doc_start[d], 0, &ids, &n))
                align_die_error("bench_tokenizer");
            nt += n;
            free(ids);
        }
        double e = align_now() - s;
        if (pass == 0) cold = e;
        else if (e < warm) warm = e;
        tokens = nt;
    }
    printf("{\"impl\": \"align\", \"tokenizer\": \"%s\", \"bytes\": %zu, \"docs\": %zu, \"tokens\": %ld, "
           "\"load_s\": %.3f, \"cold_mb_s\": %.2f, \"warm_mb_s\": %.2f, \"tokens_per_s\": %.0f}\n",
           hf_json ? hf_json : gpt2_dir, len, n_docs, tokens, load_s, len / cold / 1e6, len / warm / 1e6,
           tokens / warm);
    tok_free(t);
    free(doc_start);
    free(text);
    return 0;
}
