/* generate.c: the continuous-batching loop over a KV cache (see generate.h).
 *
 * Sequences (prompt i, sample j) are admitted in the order i * n + j into
 * the lowest free slot. Each step builds one packed batch: for every
 * sequence still reading its prompt, the next chunk of prompt tokens (the
 * step's prompt budget, prefill_chunk, is shared first come first served, so
 * a long prompt cannot starve decoding), and for every decoding sequence
 * the token it sampled last step. After the forward, sequences whose
 * prompt is fully read or that are decoding sample their next token from
 * their row of logits — in parallel, each with its own Rng and a
 * per-thread Sampler — and then, serially and in batch order, the outputs
 * grow, the callback runs, and finished sequences free their slots. */
#include "generate.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void generate_config_defaults(GenConfig *c) {
    memset(c, 0, sizeof *c);
    sampler_config_defaults(&c->sampler);
    c->max_new_tokens = 256;
    c->n_samples = 1;
    c->n_slots = 8;
    c->prefill_chunk = 512;
}

const char *generate_finish_name(GenFinish f) {
    return f == GEN_FINISH_STOP ? "stop" : f == GEN_FINISH_LENGTH ? "length" : "none";
}

static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t generate_sequence_seed(uint64_t seed, long prompt_index, int sample_index) {
    uint64_t h = mix64(seed);
    h = mix64(h ^ (uint64_t)prompt_index);
    return mix64(h ^ ((uint64_t)(uint32_t)sample_index << 1));
}

void generate_outputs_free(GenOutput *out, int n) {
    if (!out) return;
    for (int i = 0; i < n; i++) {
        free(out[i].tokens);
        free(out[i].logprobs);
        out[i].tokens = NULL;
        out[i].logprobs = NULL;
        out[i].n_tokens = 0;
    }
}

typedef struct {
    GenOutput *out;
    const GenPrompt *prompt;
    int slot;
    int fed;      /* prompt tokens already in the cache */
    int32_t next; /* sampled, not yet fed */
    Rng rng;
} Seq;

/* Samples of one prompt prefill it once: a sample whose prompt an earlier
 * admitted sample (the leader, earlier in active[]) is still reading waits;
 * once some sample holds all but the prompt's last token in its cache, the
 * others copy that prefix (kvcache_copy_prefix) and feed only the last
 * token, whose logits are then their own. Returns 1 when active[a] must
 * wait this step, 0 when it may go on (maybe after a copy), -1 on error. */
static int share_prompt(Seq *active, int n_active, int a, KVCache *kv) {
    Seq *s = &active[a];
    int want = s->prompt->n_tokens - 1, wait = 0;
    if (s->fed >= want) return 0;
    for (int b = 0; b < n_active; b++) {
        Seq *t = &active[b];
        if (b == a || t->prompt != s->prompt) continue;
        if (t->fed >= want && kvcache_len(kv, t->slot) >= want) { /* fed counts a chunk before it runs */
            if (kvcache_copy_prefix(kv, s->slot, t->slot, want)) return -1;
            s->fed = want;
            return 0;
        }
        if (b < a) wait = 1;
    }
    return wait;
}

static int is_stop(const GenConfig *c, int32_t t) {
    for (int i = 0; i < c->n_stop_ids; i++)
        if (c->stop_ids[i] == t) return 1;
    return 0;
}

int generate_run(Model *m, const GenConfig *c, const GenPrompt *prompts, int n_prompts, GenOutput *out,
                 GenTokenFn cb, void *cb_ctx) {
    int n = c->n_samples, total = n_prompts * n, V = m->cfg.vocab_size;
    for (int i = 0; i < total; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].prompt_index = i / (n > 0 ? n : 1), out[i].sample_index = i % (n > 0 ? n : 1);
    }
    if (sampler_config_validate(&c->sampler)) return align_error_prefix("generate");
    if (c->max_new_tokens <= 0) return align_errorf("generate: max_new_tokens %d must be positive", c->max_new_tokens);
    if (n <= 0) return align_errorf("generate: n_samples %d must be positive", n);
    if (c->n_slots <= 0) return align_errorf("generate: n_slots %d must be positive", c->n_slots);
    if (c->prefill_chunk <= 0) return align_errorf("generate: prefill_chunk %d must be positive", c->prefill_chunk);
    if (n_prompts < 0 || (c->n_stop_ids > 0 && !c->stop_ids)) return align_errorf("generate: bad arguments");
    if (!m->cfg.lm_head) return align_errorf("generate: the model has no LM head");
    int longest = 0;
    for (int i = 0; i < n_prompts; i++) {
        if (prompts[i].n_tokens <= 0 || !prompts[i].tokens) return align_errorf("generate: prompt %d is empty", i);
        for (int t = 0; t < prompts[i].n_tokens; t++)
            if (prompts[i].tokens[t] < 0 || prompts[i].tokens[t] >= V)
                return align_errorf("generate: prompt %d holds token id %d, outside the vocabulary (%d)", i,
                                    prompts[i].tokens[t], V);
        if (prompts[i].n_tokens > longest) longest = prompts[i].n_tokens;
    }
    if (total == 0) return 0;

    int n_slots = c->n_slots;
    KVCache *kv = c->cache;
    if (kv) {
        if (kvcache_len(kv, n_slots - 1) < 0)
            return align_errorf("generate: the given cache has fewer than n_slots = %d slots", n_slots);
    } else {
        long want = (long)longest + c->max_new_tokens;
        if (n_slots > total) n_slots = total;
        kv = kvcache_create(m, n_slots, want > 1 << 30 ? 1 << 30 : (int)want);
        if (!kv) return align_error_prefix("generate");
    }
    int max_len = kvcache_max_len(kv);
    for (int i = 0; i < n_prompts; i++)
        if (prompts[i].n_tokens > max_len) {
            if (kv != c->cache) kvcache_free(kv);
            return align_errorf("generate: prompt %d has %d tokens, more than the cache holds (%d)", i,
                                prompts[i].n_tokens, max_len);
        }

    int n_threads = omp_get_max_threads();
    int tok_cap = c->prefill_chunk + n_slots;
    Seq *active = calloc(n_slots, sizeof *active);
    Seq **in_batch = calloc(n_slots, sizeof *in_batch);
    char *slot_used = calloc(n_slots, 1);
    int32_t *tokens = malloc(tok_cap * sizeof(int32_t)), *starts = malloc((n_slots + 1) * sizeof(int32_t));
    int32_t *slots = malloc(n_slots * sizeof(int32_t)), *picked = malloc(n_slots * sizeof(int32_t));
    float *picked_lp = malloc(n_slots * sizeof(float));
    float *logits = malloc((size_t)n_slots * V * sizeof(float));
    Sampler **samplers = calloc(n_threads, sizeof *samplers);
    int rc = -1;
    if (!active || !in_batch || !slot_used || !tokens || !starts || !slots || !picked || !picked_lp || !logits ||
        !samplers) {
        align_errorf("generate: out of memory");
        goto done;
    }
    for (int t = 0; t < n_threads; t++)
        if (!(samplers[t] = sampler_create(V))) goto done;

    int n_active = 0, next_seq = 0;
    char err[ALIGN_ERR_LEN] = "";
    while (next_seq < total || n_active > 0) {
        /* admit waiting sequences into free slots */
        while (n_active < n_slots && next_seq < total) {
            int slot = 0;
            while (slot_used[slot]) slot++;
            Seq *s = &active[n_active++];
            memset(s, 0, sizeof *s);
            s->out = &out[next_seq];
            s->prompt = &prompts[s->out->prompt_index];
            s->slot = slot;
            slot_used[slot] = 1;
            kvcache_reset(kv, slot);
            rng_seed(&s->rng, generate_sequence_seed(c->seed, c->prompt_index_base + s->out->prompt_index, s->out->sample_index));
            int cap = c->max_new_tokens;
            s->out->tokens = malloc(cap * sizeof(int32_t));
            s->out->logprobs = malloc(cap * sizeof(float));
            if (!s->out->tokens || !s->out->logprobs) {
                align_errorf("generate: out of memory");
                goto done;
            }
            next_seq++;
        }
        /* one packed batch: prompt chunks and decode tokens */
        int nb = 0, nt = 0, budget = c->prefill_chunk;
        for (int a = 0; a < n_active; a++) {
            Seq *s = &active[a];
            int left = s->prompt->n_tokens - s->fed;
            if (left > 1 && n > 1) {
                int w = share_prompt(active, n_active, a, kv);
                if (w < 0) goto fail;
                if (w) continue;
                left = s->prompt->n_tokens - s->fed;
            }
            if (left > 0) {
                int take = left < budget ? left : budget;
                if (take == 0) continue;
                memcpy(tokens + nt, s->prompt->tokens + s->fed, take * sizeof(int32_t));
                s->out->prefilled += take;
                budget -= take;
                s->fed += take;
                starts[nb] = nt;
                nt += take;
            } else {
                starts[nb] = nt;
                tokens[nt++] = s->next;
            }
            slots[nb] = s->slot;
            in_batch[nb++] = s;
        }
        starts[nb] = nt;
        Batch b = {.n_tokens = nt, .n_seqs = nb, .tokens = tokens, .seq_start = starts};
        if (model_forward_cached(m, kv, slots, &b, logits)) goto fail;
        /* a prompt just read: its other samples copy it now, before its
         * leader can finish and free the slot */
        for (int a = 0; a < n_active && n > 1; a++)
            if (share_prompt(active, n_active, a, kv) < 0) goto fail;
        /* sample: every sequence whose prompt is fully read */
        int failed = 0, invariant = m->be == &backend_cpu && backend_cpu_batch_invariant();
#pragma omp parallel for schedule(dynamic, 1) if (nb > 1)
        for (int i = 0; i < nb; i++) {
            Seq *s = in_batch[i];
            picked[i] = -1;
            if (s->fed < s->prompt->n_tokens) continue;
            Sampler *sp = samplers[omp_get_thread_num()];
            picked[i] = sampler_sample(sp, &c->sampler, logits + (size_t)i * V, &s->rng, &picked_lp[i]);
            /* batch-invariant CPU mode: the log-prob as the training forward's LM head computes it */
            if (invariant && picked[i] >= 0) picked_lp[i] = backend_cpu_logprob(logits + (size_t)i * V, V, picked[i]);
            if (picked[i] < 0) {
#pragma omp critical(generate_err)
                {
                    failed = 1;
                    snprintf(err, sizeof err, "%s", align_error());
                }
            }
        }
        if (failed) {
            align_errorf("generate: %s", err);
            goto done;
        }
        /* grow outputs, run the callback, retire finished sequences */
        for (int i = 0; i < nb; i++) {
            Seq *s = in_batch[i];
            if (picked[i] < 0) continue;
            GenOutput *o = s->out;
            o->tokens[o->n_tokens] = picked[i];
            o->logprobs[o->n_tokens] = picked_lp[i];
            o->n_tokens++;
            int stop = cb ? cb(cb_ctx, o) : 0;
            if (is_stop(c, picked[i]) || stop) o->finish = GEN_FINISH_STOP;
            else if (o->n_tokens >= c->max_new_tokens || kvcache_len(kv, s->slot) >= max_len) o->finish = GEN_FINISH_LENGTH;
            else s->next = picked[i];
        }
        int kept = 0;
        for (int a = 0; a < n_active; a++) {
            if (active[a].out->finish != GEN_FINISH_NONE) {
                slot_used[active[a].slot] = 0;
                continue;
            }
            active[kept++] = active[a];
        }
        n_active = kept;
    }
    rc = 0;
    goto done;
fail:
    align_error_prefix("generate");
done:
    if (samplers)
        for (int t = 0; t < n_threads; t++) sampler_free(samplers[t]);
    free(samplers);
    free(active), free(in_batch), free(slot_used), free(tokens), free(starts), free(slots), free(picked),
        free(picked_lp), free(logits);
    if (kv != c->cache) kvcache_free(kv);
    return rc;
}
