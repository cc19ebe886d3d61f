#include "cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Config JSON trees parsed for specs, kept so strings stay valid. */
static cJSON *config_trees[8];
static int n_config_trees;

/* Other names for our flags: TRL's TrainingArguments / SFTConfig /
 * DPOConfig names and those of the TRL scripts and peft, so a TRL command
 * line or config works unchanged. An alias counts only where its flag
 * exists. Names are compared with '-' and '_' alike (name_eq), so
 * --learning_rate, --learning-rate, --max_steps and the config key
 * "max_steps" are all accepted. */
static const struct {
    const char *alias, *name;
} cli_aliases[] = {
    {"learning-rate", "lr"},
    {"per-device-train-batch-size", "batch-size"},
    {"gradient-accumulation-steps", "grad-accum"},
    {"num-train-epochs", "epochs"},
    {"lr-scheduler-type", "lr-schedule"},
    {"save-steps", "save-every"},
    {"eval-steps", "eval-every"},
    {"output-dir", "out"},
    {"resume-from-checkpoint", "resume"},
    {"model-name-or-path", "model"},
    {"max-seq-length", "max-length"},
    {"lora-r", "lora-rank"},
    {"lora-target-modules", "lora-targets"},
};

static int name_eq(const char *a, const char *b) {
    for (;; a++, b++) {
        char x = *a == '_' ? '-' : *a, y = *b == '_' ? '-' : *b;
        if (x != y) return 0;
        if (!x) return 1;
    }
}

static CliFlag *find_exact(CliSpec *s, const char *name) {
    for (int i = 0; i < s->n_flags; i++)
        if (name_eq(s->flags[i].name, name)) return &s->flags[i];
    return NULL;
}

static CliFlag *find_flag(CliSpec *s, const char *name) {
    CliFlag *f = find_exact(s, name);
    for (size_t i = 0; !f && i < sizeof cli_aliases / sizeof *cli_aliases; i++)
        if (name_eq(cli_aliases[i].alias, name)) f = find_exact(s, cli_aliases[i].name);
    return f;
}

/* Levenshtein distance with '-' == '_', capped at 99 (names are short). */
static int edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 98 || m > 98) return 99;
    int row[100];
    for (size_t j = 0; j <= m; j++) row[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            char x = a[i - 1] == '_' ? '-' : a[i - 1], y = b[j - 1] == '_' ? '-' : b[j - 1];
            int best = diag + (x != y);
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            diag = row[j];
            row[j] = best;
        }
    }
    return row[m];
}

/* The flag whose name or alias is nearest to an unknown `name`, when near
 * enough to be a typo (a third of the name's length, at least 2 edits);
 * NULL otherwise. */
static const char *nearest_flag(CliSpec *s, const char *name) {
    const char *best = NULL;
    int best_d = 99, limit = (int)strlen(name) / 3;
    if (limit < 2) limit = 2;
    for (int i = 0; i < s->n_flags; i++) {
        int d = edit_distance(name, s->flags[i].name);
        if (d < best_d) best_d = d, best = s->flags[i].name;
    }
    for (size_t i = 0; i < sizeof cli_aliases / sizeof *cli_aliases; i++) {
        CliFlag *f = find_exact(s, cli_aliases[i].name);
        int d = f ? edit_distance(name, cli_aliases[i].alias) : 99;
        if (d < best_d) best_d = d, best = f->name;
    }
    return best_d <= limit ? best : NULL;
}

/* "unknown flag --x; did you mean --y? (see --help)" into the error. */
static int unknown_flag(CliSpec *s, const char *name) {
    const char *near = nearest_flag(s, name);
    if (near) return align_errorf("unknown flag --%s; did you mean --%s? (see --help)", name, near);
    return align_errorf("unknown flag --%s (see --help)", name);
}

/* "" when x passes f's check, else what the flag accepts. */
static const char *check_failure(const CliFlag *f, double x) {
    if (f->type == CLI_FLOAT && !isfinite(x)) return "a finite number";
    switch (f->check) {
    case CLI_ANY: return "";
    case CLI_NONNEG: return x >= 0 ? "" : "a number >= 0";
    case CLI_POSITIVE: return x > 0 ? "" : "a number > 0";
    case CLI_AT_LEAST_1: return x >= 1 ? "" : "a number >= 1";
    case CLI_UNIT: return x >= 0 && x <= 1 ? "" : "a number in [0, 1]";
    case CLI_UNIT_OPEN: return x >= 0 && x < 1 ? "" : "a number in [0, 1)";
    case CLI_PORT: return x >= 0 && x <= 65535 ? "" : "a port number in 0..65535";
    case CLI_UNIT_POS: return x > 0 && x <= 1 ? "" : "a number in (0, 1]";
    case CLI_UNSET_OR_POSITIVE: return x == -1 || x > 0 ? "" : "-1 (unset) or a number > 0";
    }
    return "";
}

static int check_value(const CliFlag *f, double x, const char *where, const char *text) {
    const char *want = check_failure(f, x);
    if (*want) return align_errorf("%s --%s: expected %s, got '%s'", where, f->name, want, text);
    return 0;
}

static int set_from_string(CliFlag *f, const char *v, const char *where) {
    char *end;
    errno = 0;
    switch (f->type) {
    case CLI_INT: {
        long x = strtol(v, &end, 10);
        if (errno || *end || end == v || x < INT_MIN || x > INT_MAX)
            return align_errorf("%s --%s: expected an integer, got '%s'", where, f->name, v);
        if (check_value(f, (double)x, where, v)) return -1;
        *(int *)f->dst = (int)x;
        break;
    }
    case CLI_FLOAT: {
        float x = strtof(v, &end);
        if (errno || *end || end == v) return align_errorf("%s --%s: expected a number, got '%s'", where, f->name, v);
        if (check_value(f, (double)x, where, v)) return -1;
        *(float *)f->dst = x;
        break;
    }
    case CLI_STRING:
        *(const char **)f->dst = v;
        break;
    case CLI_BOOL:
        if (!strcmp(v, "1") || !strcmp(v, "true")) *(int *)f->dst = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false")) *(int *)f->dst = 0;
        else return align_errorf("%s --%s: expected true or false, got '%s'", where, f->name, v);
        break;
    }
    f->set = 1;
    return 0;
}

static int apply_config(CliSpec *s, const char *path) {
    size_t len;
    char *text = align_read_file(path, &len);
    if (!text) return align_error_prefix("--config");
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return align_errorf("--config %s: not a JSON object", path);
    }
    if (n_config_trees < 8) config_trees[n_config_trees++] = root;
    for (cJSON *it = root->child; it; it = it->next) {
        if (!strcmp(it->string, "config")) continue;
        CliFlag *f = find_flag(s, it->string);
        if (!f) {
            const char *near = nearest_flag(s, it->string);
            if (near)
                return align_errorf("--config %s: unknown key \"%s\"; did you mean \"%s\"? (keys are %s's long flag names)",
                                    path, it->string, near, s->prog);
            return align_errorf("--config %s: unknown key \"%s\" (keys are %s's long flag names)", path, it->string, s->prog);
        }
        char where[512];
        snprintf(where, sizeof where, "--config %s: key \"%s\":", path, it->string);
        if (cJSON_IsString(it)) {
            if (set_from_string(f, it->valuestring, where)) return -1;
        } else if (cJSON_IsArray(it) && f->type == CLI_STRING) {
            /* a list-valued flag (ppo_run's --reward terms): the strings joined with ',' as on the command line */
            size_t len = 1;
            const cJSON *e;
            cJSON_ArrayForEach(e, it) {
                if (!cJSON_IsString(e)) return align_errorf("%s a list for this flag holds strings only", where);
                len += strlen(e->valuestring) + 1;
            }
            char *joined = calloc(1, len);
            if (!joined) return align_errorf("%s out of memory", where);
            cJSON_ArrayForEach(e, it) {
                if (*joined) strcat(joined, ",");
                strcat(joined, e->valuestring);
            }
            cJSON *str = cJSON_CreateString(joined); /* lives in the tree, as string values do */
            free(joined);
            if (!str || !cJSON_ReplaceItemViaPointer(root, it, str)) return align_errorf("%s out of memory", where);
            it = str;
            if (set_from_string(f, it->valuestring, where)) return -1;
        } else if (cJSON_IsBool(it) && f->type == CLI_BOOL) {
            *(int *)f->dst = cJSON_IsTrue(it);
            f->set = 1;
        } else if (cJSON_IsNumber(it) && (f->type == CLI_INT || f->type == CLI_FLOAT)) {
            double v = it->valuedouble;
            char text[64];
            snprintf(text, sizeof text, "%g", v);
            /* checked as stored: 1e39 is finite as a double but Inf as a float */
            if (check_value(f, f->type == CLI_FLOAT ? (double)(float)v : v, where, text)) return -1;
            if (f->type == CLI_INT) {
                if (!(v >= INT_MIN && v <= INT_MAX) || v != (double)(int)v) return align_errorf("%s expected an integer", where);
                *(int *)f->dst = (int)v;
            } else {
                *(float *)f->dst = (float)v;
            }
            f->set = 1;
        } else {
            return align_errorf("%s wrong type for this flag", where);
        }
    }
    return 0;
}

/* The spec of the last cli_parse, until cli_free (cli_parsed). */
static const CliSpec *g_parsed;

const CliSpec *cli_parsed(void) { return g_parsed; }

int cli_parse(CliSpec *s, int argc, char **argv) {
    g_parsed = s;
    s->n_positional = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            cli_print_help(s);
            return 1;
        }
    }
    /* the config first, so flags override it */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) return align_errorf("--config needs a file name");
            if (apply_config(s, argv[i + 1])) return -1;
        } else if (!strncmp(argv[i], "--config=", 9)) {
            if (apply_config(s, argv[i] + 9)) return -1;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--config")) {
            i++;
            continue;
        }
        if (!strncmp(a, "--config=", 9)) continue;
        if (strncmp(a, "--", 2) || a[2] == 0) {
            if (s->n_positional >= s->max_positional || s->n_positional >= 8)
                return align_errorf("unexpected argument '%s' (see --help)", a);
            s->positional[s->n_positional++] = a;
            continue;
        }
        char name[128];
        const char *eq = strchr(a, '=');
        size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (n >= sizeof name) return align_errorf("unknown flag %.200s (see --help)", a);
        memcpy(name, a + 2, n);
        name[n] = 0;
        CliFlag *f = find_flag(s, name);
        int negated = 0;
        if (!f && !strncmp(name, "no-", 3) && (f = find_flag(s, name + 3)) && f->type == CLI_BOOL) negated = 1;
        if (!f) return unknown_flag(s, name);
        if (f->type == CLI_BOOL && !eq) {
            *(int *)f->dst = !negated;
            f->set = 1;
            continue;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (i + 1 >= argc) return align_errorf("--%s needs a value", name);
            v = argv[++i];
        }
        if (set_from_string(f, v, "")) {
            /* drop the empty "where" prefix */
            const char *msg = align_error();
            if (msg[0] == ' ') align_errorf("%s", msg + 1);
            return -1;
        }
    }
    if (s->n_positional < s->min_positional) return align_errorf("missing arguments; usage: %s", s->usage);
    return 0;
}

void cli_print_help(const CliSpec *s) {
    printf("usage: %s\n", s->usage);
    if (s->about) printf("\n%s\n", s->about);
    printf("\nflags (also accepted as keys of --config FILE.json; flags override the file):\n");
    for (int i = 0; i < s->n_flags; i++) {
        const CliFlag *f = &s->flags[i];
        char left[64], def[64] = "";
        int says_default = strstr(f->help, "default") != NULL; /* the help text already tells it */
        const char *kind = f->type == CLI_INT ? " N" : f->type == CLI_FLOAT ? " X" : f->type == CLI_STRING ? " S" : "";
        snprintf(left, sizeof left, "--%s%s", f->name, kind);
        if (says_default) def[0] = 0;
        else if (f->type == CLI_INT) snprintf(def, sizeof def, " (default %d)", *(int *)f->dst);
        else if (f->type == CLI_FLOAT) snprintf(def, sizeof def, " (default %g)", *(float *)f->dst);
        else if (f->type == CLI_STRING && *(const char **)f->dst) snprintf(def, sizeof def, " (default %.40s)", *(const char **)f->dst);
        char also[160] = ""; /* the TRL names, written as TRL writes them */
        size_t k = 0;
        for (size_t j = 0; j < sizeof cli_aliases / sizeof *cli_aliases; j++) {
            if (strcmp(cli_aliases[j].name, f->name) || k + 48 > sizeof also) continue;
            k += (size_t)snprintf(also + k, sizeof also - k, "%s", k ? ", " : " (TRL: ");
            for (const char *c = cli_aliases[j].alias; *c; c++) also[k++] = *c == '-' ? '_' : *c;
            also[k] = 0;
        }
        if (k) snprintf(also + k, sizeof also - k, ")");
        printf("  %-26s %s%s%s\n", left, f->help, def, also);
    }
    printf("  %-26s %s\n", "--config FILE.json", "read flags from a JSON object");
    printf("  %-26s %s\n", "--help", "print this help");
}

int cli_was_set(const CliSpec *s, const char *name) {
    for (int i = 0; i < s->n_flags; i++)
        if (!strcmp(s->flags[i].name, name)) return s->flags[i].set;
    return 0;
}

void cli_free(CliSpec *s) {
    if (g_parsed == s) g_parsed = NULL;
    for (int i = 0; i < n_config_trees; i++) cJSON_Delete(config_trees[i]);
    n_config_trees = 0;
}

void cli_parse_or_exit(CliSpec *s, int argc, char **argv) {
    int rc = cli_parse(s, argc, argv);
    if (rc == 1) exit(0);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", s->prog, align_error());
        exit(2);
    }
}

void cli_usage_error(const CliSpec *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", s->prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}
