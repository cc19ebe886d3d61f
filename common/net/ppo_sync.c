/* ppo_sync: weight sync messages from the policy to the rollout workers
 * (see ppo_sync.h). */
#include "ppo_sync.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "peft.h"
#include "ppo_service.h"
#include "util.h"

const char *ppo_sync_kind_name(PpoSyncKind k) {
    return k == PPO_SYNC_LORA ? "lora" : k == PPO_SYNC_PROMPT ? "prompt" : "full";
}

static int host_is_little(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static void swap4(float *x, size_t n) {
    uint8_t *b = (uint8_t *)x;
    for (size_t i = 0; i < n; i++, b += 4) {
        uint8_t t = b[0];
        b[0] = b[3], b[3] = t, t = b[1], b[1] = b[2], b[2] = t;
    }
}

/* ------------------------------------------------------------ LoRA setup */

int ppo_lora_put(WireWriter *w, const LoraConfig *c, const char *adapter_dir) {
    int rc = wire_put_int(w, "lora_rank", c->rank);
    rc |= wire_put_int(w, "lora_method", c->method);
    rc |= wire_put_float(w, "lora_alpha", c->alpha);
    rc |= wire_put_float(w, "lora_dropout", c->dropout);
    rc |= wire_put_uint(w, "lora_targets", c->targets);
    if (adapter_dir) rc |= wire_put_str(w, "lora_adapter", adapter_dir);
    return rc ? -1 : 0;
}

int ppo_set_batch_invariant(const Model *m, const WireMsg *s) {
    int on = wire_has(s, "batch_invariant") && ppo_get_num(s, "batch_invariant", 0) != 0;
    if (on && m->be != &backend_cpu)
        return align_errorf("--batch-invariant needs the CPU backend (this worker runs on %s)", m->be->name);
    if (m->be == &backend_cpu) backend_cpu_set_batch_invariant(on);
    return 0;
}

int ppo_lora_setup(Model *m, const WireMsg *s, uint64_t seed) {
    char *adapter = ppo_get_strdup(s, "lora_adapter");
    int rank = (int)ppo_get_num(s, "lora_rank", 0), rc;
    if (!adapter && rank <= 0) return 0;
    if (adapter) {
        rc = peft_load_adapter(adapter, m, seed);
        if (rc) align_error_prefix("lora_adapter %s", adapter);
    } else {
        LoraConfig c;
        lora_config_defaults(&c);
        c.rank = rank;
        c.alpha = (float)ppo_get_num(s, "lora_alpha", 2.0 * rank);
        c.dropout = (float)ppo_get_num(s, "lora_dropout", c.dropout);
        c.targets = (unsigned)ppo_get_num(s, "lora_targets", c.targets);
        c.method = (int)ppo_get_num(s, "lora_method", LORA_METHOD_LORA);
        c.seed = seed;
        rc = model_lora_attach(m, &c);
    }
    free(adapter);
    return rc ? -1 : 1;
}

int ppo_prompt_put(WireWriter *w, PromptKind kind, int n_virtual, int projection, const int32_t *init_ids, int n_init) {
    int rc = wire_put_str(w, "virtual_kind", prompt_kind_name(kind));
    rc |= wire_put_int(w, "num_virtual_tokens", n_virtual);
    if (projection) rc |= wire_put_bool(w, "prefix_projection", 1);
    if (init_ids && n_init > 0) rc |= wire_put_vec(w, "prompt_init_ids", WIRE_I32, init_ids, (size_t)n_init);
    return rc ? -1 : 0;
}

int ppo_prompt_setup(Model *m, const WireMsg *s, uint64_t seed) {
    char *kind = ppo_get_strdup(s, "virtual_kind");
    const PromptConfig *have = model_prompt_config(m);
    if (!kind) {
        if (have)
            return align_errorf("the model carries %s-tuning virtual tokens but the setup asks for none",
                                prompt_kind_name(have->kind));
        return 0;
    }
    PromptConfig pc = {.kind = !strcmp(kind, "prefix") ? PREFIX_TUNING : PROMPT_TUNING,
                       .n_virtual = (int)ppo_get_num(s, "num_virtual_tokens", 0), .seed = seed,
                       .projection = ppo_get_num(s, "prefix_projection", 0) != 0};
    int bad = strcmp(kind, "prefix") && strcmp(kind, "prompt");
    free(kind);
    if (bad) return align_errorf("setup: virtual_kind must be \"prompt\" or \"prefix\"");
    if (have) { /* a --resume checkpoint brought them */
        if (have->kind != pc.kind || have->n_virtual != pc.n_virtual || have->projection != pc.projection)
            return align_errorf("the model carries %d %s-tuning virtual tokens, the setup asks for %d %s-tuning ones",
                                have->n_virtual, prompt_kind_name(have->kind), pc.n_virtual, prompt_kind_name(pc.kind));
        model_prompt_enable(m, 1);
        return 1;
    }
    WireArray a;
    if (wire_has(s, "prompt_init_ids")) {
        if (wire_get_array(s, "prompt_init_ids", WIRE_I32, ppo_wire_limits(), &a)) return -1;
        pc.init_tokens = a.data;
        pc.n_init_tokens = (int)a.numel;
    }
    return model_prompt_attach(m, &pc) ? -1 : 1;
}

/* ------------------------------------------------------------ base fingerprint */

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

uint64_t ppo_base_fingerprint(Model *m) {
    uint64_t h = 0xcbf29ce484222325ull;
    float *host = NULL;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        if (p->lora) continue;
        h = fnv(h, p->name, strlen(p->name));
        h = fnv(h, &p->numel, sizeof p->numel);
        if (p->qtype) continue; /* blocks elsewhere; its size still counts */
        if (!host && !(host = ckpt_host_params(m, 1))) return 0;
        size_t step = p->numel / 64 + 1;
        for (size_t j = 0; j < p->numel; j += step) h = fnv(h, host + p->offset + j, sizeof(float));
        h = fnv(h, host + p->offset + p->numel - 1, sizeof(float));
    }
    ckpt_host_params_release(m, host, 0);
    return h ? h : 1;
}

/* ------------------------------------------------------------ sender */

int ppo_sync_payload(Model *m, PpoSyncPayload *p) {
    memset(p, 0, sizeof *p);
    if (m->prompt) {
        p->kind = PPO_SYNC_PROMPT;
        p->numel = model_prompt_numel(m); /* with the projection, its five tensors, which lie together */
        if (!(p->owned = align_alloc(p->numel * sizeof(float) + 64))) return align_errorf("out of memory");
        m->be->to_host(p->owned, model_prompt_data(m), p->numel * sizeof(float));
    } else if (m->lora) {
        p->kind = PPO_SYNC_LORA;
        p->numel = model_lora_numel(m);
        if (!(p->owned = align_alloc(p->numel * sizeof(float) + 64))) return align_errorf("out of memory");
        if (model_lora_get(m, p->owned)) {
            ppo_sync_payload_free(p);
            return -1;
        }
    } else {
        p->kind = PPO_SYNC_FULL;
        p->numel = m->n_elems;
        float *h = ckpt_host_params(m, 1); /* m->params itself on the CPU: sent in place */
        if (!h) return -1;
        p->data = h;
        if (h != m->params) {
            p->owned = h;
        } else if (!host_is_little()) { /* swapped below, so not in place */
            if (!(p->owned = align_alloc(p->numel * sizeof(float) + 64))) return align_errorf("out of memory");
            memcpy(p->owned, h, p->numel * sizeof(float));
        }
    }
    if (p->owned) {
        if (!host_is_little()) swap4(p->owned, p->numel); /* the wire is little-endian */
        p->data = p->owned;
    }
    return 0;
}

void ppo_sync_payload_free(PpoSyncPayload *p) {
    align_free(p->owned);
    memset(p, 0, sizeof *p);
}

WireWriter *ppo_sync_header(const Model *m, const PpoSyncPayload *p, int64_t version, uint64_t base_fp) {
    WireWriter *w = wire_writer_new("weights_raw");
    if (!w) return NULL;
    wire_put_int(w, "version", version);
    wire_put_str(w, "kind", ppo_sync_kind_name(p->kind));
    wire_put_str(w, "dtype", "f32");
    wire_put_uint(w, "numel", p->numel);
    wire_put_uint(w, "n_params", m->n_elems);
    wire_put_uint(w, "attachments", 1);
    if (p->kind == PPO_SYNC_LORA) {
        const LoraConfig *c = model_lora_config(m);
        wire_put_int(w, "lora_rank", c->rank);
        wire_put_float(w, "lora_alpha", c->alpha);
        wire_put_uint(w, "lora_targets", c->targets);
        wire_put_uint(w, "base", base_fp);
    } else if (p->kind == PPO_SYNC_PROMPT) {
        const PromptConfig *c = model_prompt_config(m);
        wire_put_str(w, "virtual_kind", prompt_kind_name(c->kind));
        wire_put_int(w, "num_virtual_tokens", c->n_virtual);
        wire_put_uint(w, "base", base_fp);
    }
    return w;
}

/* ------------------------------------------------------------ receiver */

static int want_uint(const WireMsg *h, const char *key, uint64_t *v) {
    return wire_get_uint(h, key, v) ? align_error_prefix("weights_raw") : 0;
}

int ppo_sync_apply(Model *m, uint64_t base_fp, const WireMsg *h, const void *data, size_t len, int64_t *version) {
    const char *s;
    size_t sl;
    int64_t ver;
    uint64_t numel, n_params;
    if (wire_get_int(h, "version", &ver)) return align_error_prefix("weights_raw");
    if (ver < 0) return align_errorf("weights_raw: \"version\" must not be negative (got %lld)", (long long)ver);
    if (wire_get_str(h, "kind", &s, &sl)) return align_error_prefix("weights_raw");
    PpoSyncKind kind;
    if (sl == 4 && !memcmp(s, "full", 4)) kind = PPO_SYNC_FULL;
    else if (sl == 4 && !memcmp(s, "lora", 4)) kind = PPO_SYNC_LORA;
    else if (sl == 6 && !memcmp(s, "prompt", 6)) kind = PPO_SYNC_PROMPT;
    else return align_errorf("weights_raw: \"kind\" must be \"full\", \"lora\" or \"prompt\" (got \"%.*s\")", (int)(sl > 16 ? 16 : sl), s);
    if (wire_get_str(h, "dtype", &s, &sl)) return align_error_prefix("weights_raw");
    if (sl != 3 || memcmp(s, "f32", 3))
        return align_errorf("weights_raw: \"dtype\" must be \"f32\" (got \"%.*s\")", (int)(sl > 16 ? 16 : sl), s);
    if (want_uint(h, "numel", &numel) || want_uint(h, "n_params", &n_params)) return -1;
    if (!data) return align_errorf("weights_raw: the parameters did not come (no attachment frame)");
    if (numel > SIZE_MAX / sizeof(float) || len != numel * sizeof(float))
        return align_errorf("weights_raw: the attachment has %zu bytes but \"numel\" %llu f32 needs %llu", len,
                            (unsigned long long)numel, (unsigned long long)numel * sizeof(float));
    if (n_params != m->n_elems)
        return align_errorf("weights_raw: the policy's model has %llu parameters, this worker's %zu (set up from "
                            "another model, or with other LoRA settings?)", (unsigned long long)n_params, m->n_elems);
    if (kind == PPO_SYNC_FULL) {
        if (numel != m->n_elems)
            return align_errorf("weights_raw: full weights of %llu elements for a model of %zu", (unsigned long long)numel,
                                m->n_elems);
        m->be->to_device(m->params, data, len);
        if (!host_is_little()) { /* rare: fix in place (a CPU model; the CUDA build is little-endian) */
            float *hp = ckpt_host_params(m, 1);
            if (!hp) return -1;
            swap4(hp, m->n_elems);
            ckpt_host_params_release(m, hp, 1);
        }
    } else if (kind == PPO_SYNC_PROMPT) {
        const PromptConfig *c = model_prompt_config(m);
        if (!c) return align_errorf("weights_raw: virtual tokens sent to a worker set up without them (no virtual_kind in its setup)");
        int64_t nv;
        uint64_t base;
        if (wire_get_str(h, "virtual_kind", &s, &sl) || wire_get_int(h, "num_virtual_tokens", &nv) || want_uint(h, "base", &base))
            return align_error_prefix("weights_raw");
        const char *mine = prompt_kind_name(c->kind);
        if (sl != strlen(mine) || memcmp(s, mine, sl) || nv != c->n_virtual)
            return align_errorf("weights_raw: %lld %.*s-tuning virtual tokens; this worker attached %d %s-tuning ones",
                                (long long)nv, (int)(sl > 16 ? 16 : sl), s, c->n_virtual, mine);
        if (numel != model_prompt_numel(m))
            return align_errorf("weights_raw: %llu virtual-token elements; this worker's have %zu (another "
                                "--prefix-projection?)", (unsigned long long)numel, model_prompt_numel(m));
        if (base != base_fp)
            return align_errorf("weights_raw: this worker's base model differs from the policy's (fingerprint %016llx, "
                                "the policy's %016llx): set it up from the same --policy file",
                                (unsigned long long)base_fp, (unsigned long long)base);
        float *dst = model_prompt_data(m);
        m->be->to_device(dst, data, len);
        if (!host_is_little()) {
            float *hp = ckpt_host_params(m, 1);
            if (!hp) return -1;
            swap4(hp + (dst - m->params), numel);
            ckpt_host_params_release(m, hp, 1);
        }
    } else {
        const LoraConfig *c = model_lora_config(m);
        if (!c) return align_errorf("weights_raw: LoRA adapters sent to a worker set up without LoRA (no lora_rank in its setup)");
        int64_t rank;
        double alpha;
        uint64_t targets, base;
        if (wire_get_int(h, "lora_rank", &rank) || wire_get_float(h, "lora_alpha", &alpha) ||
            want_uint(h, "lora_targets", &targets) || want_uint(h, "base", &base))
            return align_error_prefix("weights_raw");
        if (rank != c->rank || (float)alpha != c->alpha || targets != c->targets)
            return align_errorf("weights_raw: adapters of rank %lld, alpha %g, targets 0x%llx; this worker attached rank "
                                "%d, alpha %g, targets 0x%x", (long long)rank, alpha, (unsigned long long)targets, c->rank,
                                c->alpha, c->targets);
        if (numel != model_lora_numel(m))
            return align_errorf("weights_raw: %llu adapter elements; this worker's adapters have %zu",
                                (unsigned long long)numel, model_lora_numel(m));
        if (base != base_fp)
            return align_errorf("weights_raw: this worker's base model differs from the policy's (fingerprint %016llx, "
                                "the policy's %016llx): set it up from the same --policy file",
                                (unsigned long long)base_fp, (unsigned long long)base);
        if (host_is_little()) {
            if (model_lora_set(m, data)) return -1;
        } else {
            float *t = align_alloc(len + 64);
            if (!t) return align_errorf("out of memory");
            memcpy(t, data, len);
            swap4(t, numel);
            int rc = model_lora_set(m, t);
            align_free(t);
            if (rc) return -1;
        }
    }
    *version = ver;
    return 0;
}
