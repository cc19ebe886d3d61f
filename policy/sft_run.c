/* sft_run: supervised fine-tuning (and continued pre-training).
 *
 * SFT records ({messages}, {question, answer}, {prompt, completion}) are
 * rendered with the chat template; prompt tokens never count in the loss,
 * which is the token mean of the completion's negative log-likelihood over
 * the micro-batch (as TRL's SFTTrainer with completion-only loss). In a
 * multi-turn {messages} record every assistant turn is a completion
 * (--last-turn-only: the last one). Examples
 * of a micro-batch are packed into one forward with no padding. Like TRL it
 * logs mean_token_accuracy: how many completion tokens are the argmax.
 *
 * --mode pretrain takes raw {text} records, puts the loss on every token,
 * and cuts long documents into --max-length windows instead of truncating
 * them, for continued pre-training on domain text before SFT. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "trainer.h"
#include "util.h"

typedef struct {
    Model *m;
    Dataset train, eval;
    DsSeq *seqs;          /* what the examples are, after windowing */
    int n_seqs;
    DsSeq *eval_seqs;
    int n_eval;
    int batch_size;
} Sft;

/* TRL's mean_token_accuracy: the share of loss tokens whose target is the
 * logits' argmax. After model_forward and before model_token_logprobs (the
 * logits reuse the LM head's buffers), in blocks of rows so the logits of
 * a long batch never exist whole. Returns the count of correct tokens, or
 * -1 on error. */
static long count_correct(Model *m, const DsPacked *p) {
    enum { BLOCK = 64 };
    int V = m->cfg.vocab_size;
    float *logits = malloc((size_t)BLOCK * V * sizeof(float));
    int32_t rows[BLOCK];
    if (!logits) return align_errorf("out of memory");
    long correct = 0;
    int n = 0;
    for (int i = 0; i <= p->batch.n_tokens; i++) {
        int full = i == p->batch.n_tokens || n == BLOCK;
        if (full && n) {
            if (model_logits(m, rows, n, logits)) {
                free(logits);
                return -1;
            }
            for (int r = 0; r < n; r++) {
                const float *l = logits + (size_t)r * V;
                int best = 0;
                for (int v = 1; v < V; v++)
                    if (l[v] > l[best]) best = v;
                correct += best == p->targets[rows[r]];
            }
            n = 0;
        }
        if (i < p->batch.n_tokens && p->loss_mask[i] && p->targets[i] >= 0) rows[n++] = i;
    }
    free(logits);
    return correct;
}

/* Forward + masked NLL (+ backward when train): returns tokens, -1 on error. */
static long run_batch(Sft *s, const DsSeq *seqs, int n, float scale, int train, Metrics *acc) {
    DsPacked p;
    if (ds_pack(seqs, n, 1, &p)) return -1;
    long rc = -1;
    float *logp = malloc(p.batch.n_tokens * sizeof(float)), *dlogp = malloc(p.batch.n_tokens * sizeof(float));
    if (!logp || !dlogp) {
        align_errorf("out of memory");
        goto done;
    }
    if (model_forward(s->m, &p.batch)) goto done;
    long correct = count_correct(s->m, &p);
    if (correct < 0 || model_token_logprobs(s->m, p.targets, logp)) goto done;
    double nll = 0;
    int n_loss = p.n_loss_tokens > 0 ? p.n_loss_tokens : 1;
    for (int i = 0; i < p.batch.n_tokens; i++) {
        dlogp[i] = p.loss_mask[i] ? -scale / n_loss : 0.0f;
        if (p.loss_mask[i]) nll -= logp[i];
    }
    if (train && model_backward(s->m, dlogp, NULL)) goto done;
    metrics_add(acc, "loss", nll / n_loss, p.n_loss_tokens);
    /* tokens per micro-batch: a data-parallel rank holds 1/N of it, so its
     * count weighs 1/N (merged, the whole micro-batch's count) */
    int world = train ? dist_size() : 1;
    metrics_add(acc, "num_tokens", (double)p.n_loss_tokens * world, 1.0 / world);
    if (p.n_loss_tokens > 0) metrics_add(acc, "mean_token_accuracy", (double)correct / p.n_loss_tokens, p.n_loss_tokens);
    rc = p.batch.n_tokens;
done:
    free(logp), free(dlogp);
    ds_packed_free(&p);
    return rc;
}

static long sft_micro_step(void *ctx, const int32_t *idx, int n, float scale, Metrics *acc) {
    Sft *s = ctx;
    DsSeq *batch = malloc(n * sizeof(DsSeq));
    if (!batch) return align_errorf("out of memory");
    for (int i = 0; i < n; i++) batch[i] = s->seqs[idx[i]];
    long t = run_batch(s, batch, n, scale, 1, acc);
    free(batch);
    return t;
}

/* The loss is a mean over the micro-batch's loss tokens: a data-parallel
 * rank's share of it is its examples' loss tokens (as ds_pack counts them). */
static double sft_weight(void *ctx, const int32_t *idx, int n) {
    Sft *s = ctx;
    DsSeq *batch = malloc(n * sizeof(DsSeq));
    if (!batch) return -1;
    for (int i = 0; i < n; i++) batch[i] = s->seqs[idx[i]];
    DsPacked p;
    double w = ds_pack(batch, n, 1, &p) ? -1 : p.n_loss_tokens;
    if (w >= 0) ds_packed_free(&p);
    free(batch);
    return w;
}

static int sft_evaluate(void *ctx, Metrics *out) {
    Sft *s = ctx;
    for (int at = 0; at < s->n_eval; at += s->batch_size) {
        int n = s->n_eval - at < s->batch_size ? s->n_eval - at : s->batch_size;
        if (run_batch(s, s->eval_seqs + at, n, 0, 0, out) < 0) return -1;
    }
    return 0;
}

/* Sequences to train on: one per example, or for pretraining, windows of
 * max_length tokens over each document. */
static int make_seqs(const Dataset *d, int pretrain, int max_length, DsSeq **out, int *n_out) {
    size_t cap = d->n + 1, n = 0;
    for (size_t i = 0; pretrain && i < d->n; i++) cap += d->ex[i].n_chosen / (max_length > 1 ? max_length : 1) + 1;
    DsSeq *seqs = malloc(cap * sizeof(DsSeq));
    if (!seqs) return align_errorf("out of memory");
    for (size_t i = 0; i < d->n; i++) {
        DsSeq whole = ds_example_seq(&d->ex[i], 0);
        if (!pretrain || max_length <= 1 || whole.n_completion <= max_length) {
            if (whole.n_prompt + whole.n_completion >= 2) seqs[n++] = whole;
            continue;
        }
        for (int at = 0; at < whole.n_completion - 1; at += max_length) {
            int len = whole.n_completion - at < max_length ? whole.n_completion - at : max_length;
            if (len < 2) break;
            seqs[n++] = (DsSeq){.prompt = NULL, .n_prompt = 0, .completion = whole.completion + at, .n_completion = len};
        }
    }
    *out = seqs;
    *n_out = (int)n;
    return 0;
}

int main(int argc, char **argv) {
    TrainArgs a;
    train_args_defaults(&a);
    a.lr = 2e-5f; /* TRL's SFTConfig default */
    const char *model = NULL, *data = NULL, *mode = "sft";
    CliFlag flags[TRAIN_ARGS_N_FLAGS + 3] = {
        {"model", CLI_STRING, &model, "starting model: .ckpt, .gguf or a Hugging Face directory"},
        {"data", CLI_STRING, &data, "SFT records (JSONL or .json): {messages}, {question, answer}, {prompt, completion}; {text} with --mode pretrain"},
        {"mode", CLI_STRING, &mode, "sft (loss on completions) or pretrain (loss on every token of {text})"},
    };
    int nf = 3 + train_args_flags(&a, flags + 3);
    CliSpec spec = {.prog = "sft_run", .usage = "sft_run --model M --data F --out O [flags]",
                    .about = "Supervised fine-tuning: prompt tokens are masked out of the loss; examples are packed without padding.",
                    .flags = flags, .n_flags = nf};
    cli_parse_or_exit(&spec, argc, argv);
    if (!model && !a.resume) align_die("sft_run", "--model is required (see --help)");
    if (!data) align_die("sft_run", "--data is required (see --help)");
    int pretrain = !strcmp(mode, "pretrain");
    if (!pretrain && strcmp(mode, "sft")) cli_usage_error(&spec, "--mode %s: expected sft or pretrain", mode);
    if (trainer_check_args(&a)) cli_usage_error(&spec, "%s", align_error());

    ModelBundle policy;
    ChatTemplate tmpl;
    if (trainer_load_policy(&a, model, &policy, &tmpl)) align_die_error("sft_run");
    if (!policy.model->cfg.lm_head) align_die("sft_run", "%s has no LM head (it is a reward/value model)", model);
    if (trainer_setup_peft("sft_run", &a, &policy)) align_die_error("sft_run");
    if (pretrain) tmpl = CHAT_TEMPLATE_NONE;
    TrainArgs load = a;
    if (pretrain) load.max_length = 0; /* documents are windowed, not truncated */
    Sft s = {.m = policy.model, .batch_size = a.batch_size};
    if (trainer_load_data("sft_run", &load, data, policy.tok, tmpl, DS_SFT, &s.train)) align_die_error("sft_run");
    if (make_seqs(&s.train, pretrain, a.max_length, &s.seqs, &s.n_seqs)) align_die_error("sft_run");
    if (a.eval_data) {
        if (trainer_load_data("sft_run", &load, a.eval_data, policy.tok, tmpl, DS_SFT, &s.eval) ||
            make_seqs(&s.eval, pretrain, a.max_length, &s.eval_seqs, &s.n_eval))
            align_die_error("sft_run");
    }
    static const char *shown[] = {"loss", "lr", "grad_norm", "tokens_per_s", NULL};
    TrainTask task = {.ctx = &s, .n_train = s.n_seqs, .micro_step = sft_micro_step, .weight = sft_weight,
                      .evaluate = a.eval_data ? sft_evaluate : NULL, .shown = shown,
                      .one_backward = 1 /* run_batch: one forward, one backward */};
    int rc = trainer_run("sft_run", &a, &policy, &task);
    if (rc < 0) align_die_error("sft_run");
    free(s.seqs), free(s.eval_seqs);
    ds_free(&s.train);
    if (a.eval_data) ds_free(&s.eval);
    model_bundle_free(&policy);
    cli_free(&spec);
    return rc == 1 ? 130 : 0;
}
