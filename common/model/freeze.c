/* BitFit and freeze tuning: see freeze.h. */
#include "freeze.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int freeze_layer_of(const char *name, const char **module) {
    static const char *const prefixes[] = {".layers.", ".h."};
    for (size_t k = 0; k < sizeof prefixes / sizeof *prefixes; k++) {
        const char *s = strstr(name, prefixes[k]);
        if (!s) continue;
        s += strlen(prefixes[k]);
        char *end;
        long idx = strtol(s, &end, 10);
        if (end == s || *end != '.') continue;
        if (module) *module = end + 1;
        return (int)idx;
    }
    return -1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

int model_train_only_biases(Model *m) {
    unsigned char *train = calloc((size_t)m->n_params, 1);
    if (!train) return align_errorf("out of memory");
    int n = 0;
    for (int i = 0; i < m->n_params; i++) n += train[i] = ends_with(m->info[i].name, ".bias") && !m->info[i].qtype;
    if (n == 0) {
        free(train);
        return align_errorf("BitFit: the model has no bias tensors to train (Llama-family models have none; "
                            "GPT-2 and Qwen2 do): use --peft lora or --peft freeze");
    }
    n = model_set_trainable_mask(m, train);
    free(train);
    return n;
}

/* Does the module component `mod` (up to its '.') equal one of the comma
 * list's names? */
static int module_listed(const char *list, const char *mod) {
    size_t len = strcspn(mod, ".");
    for (const char *s = list; *s;) {
        size_t k = strcspn(s, ",");
        if (k == len && !strncmp(s, mod, len)) return 1;
        s += k;
        if (*s == ',') s++;
    }
    return 0;
}

int model_train_layers(Model *m, int layers, const char *modules) {
    int L = m->cfg.n_layers;
    if (layers == 0 || layers > L || layers < -L)
        return align_errorf("--trainable-layers %d: expected 1..%d (the last N layers) or -1..-%d (the first N)", layers,
                            L, L);
    int lo = layers > 0 ? L - layers : 0, hi = layers > 0 ? L : -layers; /* layers [lo, hi) train */
    int all = !modules || !*modules || !strcmp(modules, "all");
    if (!all) {
        /* every listed name must be a module of the chosen layers */
        for (const char *s = modules; *s;) {
            size_t k = strcspn(s, ",");
            int found = 0;
            for (int i = 0; i < m->n_params && !found; i++) {
                const char *mod;
                int idx = freeze_layer_of(m->info[i].name, &mod);
                found = idx >= lo && idx < hi && strcspn(mod, ".") == k && !strncmp(mod, s, k);
            }
            if (!found) {
                char have[512] = "";
                size_t used = 0;
                for (int i = 0; i < m->n_params; i++) {
                    const char *mod;
                    if (freeze_layer_of(m->info[i].name, &mod) != lo) continue;
                    int len = (int)strcspn(mod, ".");
                    char one[96];
                    snprintf(one, sizeof one, "%.*s", len, mod);
                    if (module_listed(have, one)) continue;
                    if (used + strlen(one) + 2 >= sizeof have) break;
                    used += (size_t)snprintf(have + used, sizeof have - used, "%s%s",
                                             used ? "," : "", one);
                }
                return align_errorf("--trainable-modules: no module \"%.*s\" in the model's layers (they have %s)", (int)k,
                                    s, have);
            }
            s += k;
            if (*s == ',') s++;
        }
    }
    unsigned char *train = calloc((size_t)m->n_params, 1);
    if (!train) return align_errorf("out of memory");
    for (int i = 0; i < m->n_params; i++) {
        const char *mod;
        int idx = freeze_layer_of(m->info[i].name, &mod);
        train[i] = idx >= lo && idx < hi && (all || module_listed(modules, mod));
    }
    int n = model_set_trainable_mask(m, train);
    free(train);
    return n;
}
