#include "verify.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <math.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static void copy_span(const char *s, size_t n, char *out, size_t cap) {
    while (n > 0 && isspace((unsigned char)*s)) s++, n--;
    while (n > 0 && isspace((unsigned char)s[n - 1])) n--;
    if (n >= cap) n = cap - 1;
    memcpy(out, s, n);
    out[n] = 0;
}

/* The last needle in text, or NULL. */
static const char *last_of(const char *text, const char *needle) {
    const char *last = NULL;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle)) last = p;
    return last;
}

/* The content of the last \boxed{...} with balanced braces; 0 = found. */
static int last_boxed(const char *text, char *out, size_t cap) {
    for (const char *p = last_of(text, "\\boxed"); p; ) {
        const char *q = p + 6;
        while (*q == ' ') q++;
        if (*q == '{') {
            int depth = 1;
            const char *s = ++q;
            for (; *q && depth; q++) depth += *q == '{' ? 1 : *q == '}' ? -1 : 0;
            if (depth == 0) {
                copy_span(s, (size_t)(q - 1 - s), out, cap);
                if (*out) return 0;
            }
        }
        /* an unclosed or empty box: try the one before it */
        const char *prev = NULL;
        for (const char *r = strstr(text, "\\boxed"); r && r < p; r = strstr(r + 1, "\\boxed")) prev = r;
        p = prev;
    }
    return -1;
}

/* A number token at p: [-]digits[,ddd]*[.digits][/digits], or .digits.
 * Its length, 0 when none starts here. */
static size_t number_at(const char *p) {
    const char *q = p;
    if (*q == '-') q++;
    const char *d = q;
    while (isdigit((unsigned char)*q)) q++;
    if (q > d) /* thousands groups: a comma and exactly three digits */
        while (q[0] == ',' && isdigit((unsigned char)q[1]) && isdigit((unsigned char)q[2]) &&
               isdigit((unsigned char)q[3]) && !isdigit((unsigned char)q[4]))
            q += 4;
    int has_int = q > d;
    if (*q == '.' && isdigit((unsigned char)q[1])) {
        q++;
        while (isdigit((unsigned char)*q)) q++;
    } else if (!has_int) {
        return 0;
    }
    if (*q == '/' && isdigit((unsigned char)q[1])) {
        q++;
        while (isdigit((unsigned char)*q)) q++;
    }
    return (size_t)(q - p);
}

int verify_extract_answer(const char *text, char *out, size_t cap) {
    if (!text || cap == 0) return -1;
    out[0] = 0;
    if (!last_boxed(text, out, cap)) return 0;
    const char *h = last_of(text, "####");
    if (h) {
        h += 4;
        size_t n = strcspn(h, "\n");
        copy_span(h, n, out, cap);
        if (*out) return 0;
    }
    const char *best = NULL;
    size_t best_n = 0;
    for (const char *p = text; *p;) {
        /* a number starts at a digit, '.', or '-' not glued to a word */
        int start = isdigit((unsigned char)*p) || (*p == '.' && isdigit((unsigned char)p[1])) ||
                    (*p == '-' && (p == text || !isalnum((unsigned char)p[-1])));
        if (start && (p == text || !isalnum((unsigned char)p[-1]) || *p == '-')) {
            size_t n = number_at(p);
            if (n) {
                best = p, best_n = n;
                p += n;
                continue;
            }
        }
        p++;
    }
    if (!best) return -1;
    copy_span(best, best_n, out, cap);
    return 0;
}

/* A plain number (sign, thousands groups, decimals) filling all of s. */
static int plain_number(const char *s, double *v) {
    char buf[128];
    size_t k = 0;
    const char *p = s;
    if (*p == '+' || *p == '-') buf[k++] = *p++;
    size_t n = number_at(p);
    if (!n || p[n] || strchr(p, '/')) return -1;
    for (size_t i = 0; i < n && k < sizeof buf - 1; i++)
        if (p[i] != ',') buf[k++] = p[i];
    buf[k] = 0;
    char *end;
    *v = strtod(buf, &end);
    return *end || !isfinite(*v) ? -1 : 0;
}

/* s[0..n) into a NUL-terminated buffer. */
static int take(const char *s, size_t n, char *buf, size_t cap) {
    if (n >= cap) return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    return 0;
}

int verify_parse_number(const char *s, double *value) {
    if (!s) return -1;
    char b[256];
    size_t k = 0;
    for (const char *p = s; *p; p++) /* whitespace never matters inside an answer */
        if (!isspace((unsigned char)*p)) {
            if (k >= sizeof b - 1) return -1;
            b[k++] = *p;
        }
    b[k] = 0;
    char *p = b;
    if (!strncmp(p, "\\$", 2)) p += 2;
    else if (*p == '$') p++;
    size_t n = strlen(p);
    if (n >= 2 && !strcmp(p + n - 2, "\\%")) p[n -= 2] = 0;
    else if (n >= 1 && (p[n - 1] == '%' || p[n - 1] == '$')) p[--n] = 0;
    if (n >= 1 && p[n - 1] == '.') p[--n] = 0; /* the sentence's full stop */
    if (n >= 2 && p[0] == '{' && p[n - 1] == '}') p[--n] = 0, p++, n--;
    int neg = 0;
    if (*p == '-' && p[1] == '\\') neg = 1, p++;
    const char *fr = !strncmp(p, "\\frac", 5) ? p + 5 : !strncmp(p, "\\dfrac", 6) || !strncmp(p, "\\tfrac", 6) ? p + 6 : NULL;
    if (fr) { /* \frac{a}{b} */
        char a[128], d[128];
        const char *e1 = fr[0] == '{' ? strchr(fr, '}') : NULL;
        const char *e2 = e1 && e1[1] == '{' ? strchr(e1 + 1, '}') : NULL;
        double x, y;
        if (!e2 || e2[1] || take(fr + 1, (size_t)(e1 - fr - 1), a, sizeof a) ||
            take(e1 + 2, (size_t)(e2 - e1 - 2), d, sizeof d) || plain_number(a, &x) || plain_number(d, &y) || y == 0)
            return -1;
        *value = neg ? -x / y : x / y;
        return 0;
    }
    if (neg) return -1;
    char *slash = strchr(p, '/');
    if (slash) {
        char a[128];
        double x, y;
        if (take(p, (size_t)(slash - p), a, sizeof a) || plain_number(a, &x) || plain_number(slash + 1, &y) || y == 0)
            return -1;
        *value = x / y;
        return 0;
    }
    return plain_number(p, value);
}

/* Whitespace and '$' dropped, a final '.' dropped, lower case: "B." == "b". */
static void normalise(const char *s, char *out, size_t cap) {
    size_t k = 0;
    for (; *s && k < cap - 1; s++)
        if (!isspace((unsigned char)*s) && *s != '$') out[k++] = (char)tolower((unsigned char)*s);
    while (k > 0 && out[k - 1] == '.') k--;
    out[k] = 0;
}

double verify_math(const char *completion, const char *label) {
    if (!completion || !label) return 0.0;
    char got[512], want[512];
    if (verify_extract_answer(completion, got, sizeof got)) return 0.0;
    /* a GSM8K answer field or a boxed solution: its final answer; else the whole label */
    if (!(strstr(label, "\\boxed") || strstr(label, "####")) || verify_extract_answer(label, want, sizeof want))
        copy_span(label, strlen(label), want, sizeof want);
    double a, b;
    if (!verify_parse_number(got, &a) && !verify_parse_number(want, &b)) {
        double scale = fmax(1.0, fmax(fabs(a), fabs(b)));
        return fabs(a - b) <= 1e-9 * scale ? 1.0 : 0.0;
    }
    char ng[512], nw[512];
    normalise(got, ng, sizeof ng);
    normalise(want, nw, sizeof nw);
    return *nw && !strcmp(ng, nw) ? 1.0 : 0.0;
}

double verify_exact(const char *completion, const char *label) {
    if (!completion || !label) return 0.0;
    const char *a = completion, *b = label;
    while (isspace((unsigned char)*a)) a++;
    while (isspace((unsigned char)*b)) b++;
    size_t na = strlen(a), nb = strlen(b);
    while (na > 0 && isspace((unsigned char)a[na - 1])) na--;
    while (nb > 0 && isspace((unsigned char)b[nb - 1])) nb--;
    return na == nb && !memcmp(a, b, na) ? 1.0 : 0.0;
}

struct VerifyPattern {
    pcre2_code *re;
    pcre2_match_data *md;
};

VerifyPattern *verify_pattern_new(const char *pattern, const char *what) {
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_DOTALL, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        align_errorf("%s: pattern \"%s\" does not compile at offset %zu: %s", what, pattern, (size_t)off, (char *)msg);
        return NULL;
    }
    VerifyPattern *p = calloc(1, sizeof *p);
    if (p) p->md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!p || !p->md) {
        pcre2_code_free(re);
        free(p);
        align_errorf("out of memory compiling %s", what);
        return NULL;
    }
    p->re = re;
    return p;
}

void verify_pattern_free(VerifyPattern *p) {
    if (!p) return;
    pcre2_match_data_free(p->md);
    pcre2_code_free(p->re);
    free(p);
}

int verify_pattern_match(const VerifyPattern *p, const char *text) {
    /* byte mode (no PCRE2_UTF): generated text may be cut mid-character,
     * and a UTF pattern would refuse it */
    int rc = pcre2_match(p->re, (PCRE2_SPTR)text, strlen(text), 0, 0, p->md, NULL);
    if (rc >= 0) return 1;
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    PCRE2_UCHAR msg[160];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return align_errorf("pattern match failed: %s", (char *)msg);
}

int verify_regex(const char *completion, const char *label, double *out) {
    *out = 0.0;
    if (!completion || !label) return 0;
    VerifyPattern *p = verify_pattern_new(label, "regex label");
    if (!p) return -1;
    int m = verify_pattern_match(p, completion);
    verify_pattern_free(p);
    if (m < 0) return -1;
    *out = m;
    return 0;
}

double verify_length(int n_tokens, int max_tokens) {
    if (max_tokens <= 0) return 0.0;
    double x = (double)n_tokens / max_tokens;
    return x < 0 ? 0 : x > 1 ? 1 : x;
}

double verify_overlong(int n_tokens, int max_tokens, int buffer) {
    if (n_tokens > max_tokens) return -1.0;
    int free_len = max_tokens - buffer;
    if (buffer <= 0 || n_tokens <= free_len) return 0.0;
    return (double)(free_len - n_tokens) / buffer;
}

/* The length of the valid UTF-8 sequence at p (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n) {
    if (p[0] < 0x80) return 1;
    size_t k = p[0] >= 0xC2 && p[0] <= 0xDF ? 2 : p[0] >= 0xE0 && p[0] <= 0xEF ? 3 : p[0] >= 0xF0 && p[0] <= 0xF4 ? 4 : 0;
    if (!k || k > n) return 0;
    for (size_t i = 1; i < k; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    /* overlong 3/4-byte forms, surrogates, beyond U+10FFFF */
    if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] >= 0xA0) || (p[0] == 0xF0 && p[1] < 0x90) ||
        (p[0] == 0xF4 && p[1] >= 0x90))
        return 0;
    return k;
}

char *verify_utf8_clean(const char *s, size_t n) {
    char *out = malloc(3 * n + 1), *o = out;
    if (!out) return NULL;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = p[i] ? utf8_len(p + i, n - i) : 0;
        if (k) {
            memcpy(o, p + i, k);
            o += k, i += k;
        } else { /* one bad byte (or a NUL) -> U+FFFD */
            memcpy(o, "\xEF\xBF\xBD", 3);
            o += 3, i++;
        }
    }
    *o = 0;
    return out;
}
