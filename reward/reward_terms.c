#define _DEFAULT_SOURCE
#include "reward_terms.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char *BUILTIN[] = {"math", "exact", "regex", "format", "length", "overlong", "url"};

int reward_spec_add(RewardSpec *s, RewardTermKind kind, const char *name, double weight) {
    if (s->n >= REWARD_MAX_TERMS) return align_errorf("--reward: more than %d terms", REWARD_MAX_TERMS);
    RewardTerm *t = &s->t[s->n];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->weight = weight;
    snprintf(t->name, sizeof t->name, "%s", kind == RT_MODEL ? "model" : name);
    if (kind == RT_MODEL) snprintf(t->path, sizeof t->path, "%s", name);
    if (kind == RT_MODEL) s->model = s->n;
    if (kind == RT_URL) s->url = s->n;
    s->n++;
    return 0;
}

int reward_spec_parse(const char *spec, RewardSpec *out) {
    memset(out, 0, sizeof *out);
    out->model = out->url = -1;
    char *copy = strdup(spec), *rest = copy, *item;
    int rc = 0;
    if (!*copy) rc = align_errorf("--reward: empty (expected terms like math,format:0.2,rm.ckpt:0.5)");
    while (!rc && (item = strsep(&rest, ","))) { /* strsep, not strtok: "a,,b" has an empty term */
        while (*item == ' ') item++;
        double w = 1.0;
        char *colon = strrchr(item, ':');
        if (colon) { /* NAME:W, unless what follows is not a number (a path with a colon) */
            char *end;
            double v = strtod(colon + 1, &end);
            if (end != colon + 1 && !*end) w = v, *colon = 0;
        }
        if (!*item) {
            rc = align_errorf("--reward %s: an empty term", spec);
            break;
        }
        RewardTermKind kind = RT_MODEL;
        for (int k = 0; k < (int)(sizeof BUILTIN / sizeof *BUILTIN); k++)
            if (!strcmp(item, BUILTIN[k])) kind = (RewardTermKind)k;
        for (int i = 0; i < out->n && !rc; i++)
            if (kind != RT_MODEL && out->t[i].kind == kind) rc = align_errorf("--reward %s: \"%s\" appears twice", spec, item);
        if (!rc && kind == RT_MODEL && out->model >= 0)
            rc = align_errorf("--reward %s: two reward models (%s and %s); one reward_server serves one", spec,
                              out->t[out->model].path, item);
        if (!rc) rc = reward_spec_add(out, kind, item, w);
    }
    free(copy);
    return rc;
}

int reward_term_eval(const RewardTerm *t, const RewardRuleCtx *ctx, const char *completion, const char *label,
                     int n_tokens, double *out) {
    *out = 0;
    switch (t->kind) {
    case RT_MATH: *out = verify_math(completion, label); return 0;
    case RT_EXACT: *out = verify_exact(completion, label); return 0;
    case RT_REGEX:
        if (verify_regex(completion, label, out)) return align_error_prefix("--reward regex");
        return 0;
    case RT_FORMAT: {
        if (!ctx->format) return align_errorf("--reward format: needs --format-pattern");
        int m = verify_pattern_match(ctx->format, completion);
        if (m < 0) return -1;
        *out = m;
        return 0;
    }
    case RT_LENGTH: *out = verify_length(n_tokens, ctx->max_tokens); return 0;
    case RT_OVERLONG: *out = verify_overlong(n_tokens, ctx->max_tokens, ctx->overlong_buffer); return 0;
    default: return align_errorf("reward term %s is not rule-based", t->name);
    }
}
