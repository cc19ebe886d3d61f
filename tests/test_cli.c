/* The shared command-line contract: flags of every type, --flag=value,
 * booleans and --no-X, --config JSON with flags overriding it, positionals,
 * and one clear error naming the flag or config key for bad input; every
 * CliCheck accepts its range and refuses the rest (floats always finite),
 * from argv and from the config alike. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "cli.h"
#include "test.h"
#include "util.h"

static int steps, verbose;
static float lr;
static const char *out;
static CliFlag flags[] = {
    {"max-steps", CLI_INT, &steps, "steps"},
    {"lr", CLI_FLOAT, &lr, "learning rate"},
    {"out", CLI_STRING, &out, "output"},
    {"verbose", CLI_BOOL, &verbose, "talk"},
};

static int parse(int argc, char **argv, CliSpec *s) {
    steps = 10, lr = 1e-5f, out = NULL, verbose = 0;
    memset(s, 0, sizeof *s);
    s->prog = "prog", s->usage = "prog [flags] DATA", s->flags = flags, s->n_flags = 4;
    s->min_positional = 1, s->max_positional = 1;
    for (int i = 0; i < 4; i++) flags[i].set = 0;
    return cli_parse(s, argc, argv);
}

int main(void) {
    CliSpec s;
    char *a1[] = {"prog", "data.jsonl", "--max-steps", "7", "--lr=0.5", "--out", "o.ckpt", "--verbose"};
    CHECK(parse(8, a1, &s) == 0, "plain flags: %s", align_error());
    CHECK(steps == 7 && lr == 0.5f && !strcmp(out, "o.ckpt") && verbose == 1, "values parsed");
    CHECK(s.n_positional == 1 && !strcmp(s.positional[0], "data.jsonl"), "positional kept");
    CHECK(cli_was_set(&s, "lr") && !cli_was_set(&s, "nothing"), "set flags are known");

    char path[] = "/tmp/align_test_cli_XXXXXX";
    int fd = mkstemp(path);
    const char *json = "{\"max-steps\": 3, \"lr\": 0.25, \"out\": \"c.ckpt\", \"verbose\": true}";
    CHECK(write(fd, json, strlen(json)) == (ssize_t)strlen(json), "write config");
    close(fd);
    char *a2[] = {"prog", "--config", path, "d", "--lr", "2", "--no-verbose"};
    CHECK(parse(7, a2, &s) == 0, "config: %s", align_error());
    CHECK(steps == 3 && lr == 2.0f && !strcmp(out, "c.ckpt") && verbose == 0, "flags override the config");
    cli_free(&s);

    /* a list for a string flag (ppo_run's --reward terms): joined with ',' */
    fd = open(path, O_WRONLY | O_TRUNC);
    const char *list = "{\"out\": [\"math\", \"format:0.2\", \"rm.ckpt:0.5\"], \"max-steps\": 4}";
    CHECK(write(fd, list, strlen(list)) == (ssize_t)strlen(list), "write config");
    close(fd);
    char *a2b[] = {"prog", "--config", path, "d"};
    CHECK(parse(4, a2b, &s) == 0 && !strcmp(out, "math,format:0.2,rm.ckpt:0.5") && steps == 4, "list joined: %s",
          align_error());
    cli_free(&s);
    fd = open(path, O_WRONLY | O_TRUNC);
    const char *badlist = "{\"out\": [\"math\", 2]}";
    CHECK(write(fd, badlist, strlen(badlist)) == (ssize_t)strlen(badlist), "write config");
    close(fd);
    CHECK(parse(4, a2b, &s) == -1 && strstr(align_error(), "strings only") && strstr(align_error(), "\"out\""),
          "a list of non-strings: %s", align_error());
    cli_free(&s);

    char *a3[] = {"prog", "d", "--max-steps", "seven"};
    CHECK(parse(4, a3, &s) == -1 && strstr(align_error(), "--max-steps") && strstr(align_error(), "seven"), "bad integer names the flag: %s", align_error());
    char *a4[] = {"prog", "d", "--bogus", "1"};
    CHECK(parse(4, a4, &s) == -1 && strstr(align_error(), "--bogus"), "unknown flag named: %s", align_error());
    char *a5[] = {"prog", "--lr"};
    CHECK(parse(2, a5, &s) == -1 && strstr(align_error(), "--lr needs a value"), "missing value: %s", align_error());
    char *a6[] = {"prog"};
    CHECK(parse(1, a6, &s) == -1 && strstr(align_error(), "missing arguments"), "missing positional: %s", align_error());
    char *a7[] = {"prog", "a", "b"};
    CHECK(parse(3, a7, &s) == -1 && strstr(align_error(), "unexpected argument 'b'"), "extra positional: %s", align_error());

    fd = open(path, O_WRONLY | O_TRUNC);
    const char *bad = "{\"lr\": 0.1, \"typo-flag\": 1}";
    CHECK(write(fd, bad, strlen(bad)) > 0, "write config");
    close(fd);
    char *a8[] = {"prog", "d", "--config", path};
    CHECK(parse(4, a8, &s) == -1 && strstr(align_error(), "typo-flag") && strstr(align_error(), path), "unknown config key named with the file: %s", align_error());
    fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(write(fd, "[1,2", 4) == 4, "write config");
    close(fd);
    CHECK(parse(4, a8, &s) == -1 && strstr(align_error(), "not a JSON object"), "broken config: %s", align_error());
    char *a9[] = {"prog", "d", "--config", "/nonexistent/x.json"};
    CHECK(parse(4, a9, &s) == -1 && strstr(align_error(), "/nonexistent/x.json"), "missing config named: %s", align_error());
    cli_free(&s);

    /* each check kind at its edges: value, whether accepted */
    static const struct {
        CliCheck check;
        const char *value;
        int ok;
    } cases[] = {
        {CLI_ANY, "-3.5", 1},          {CLI_ANY, "nan", 0},           {CLI_ANY, "inf", 0},
        {CLI_ANY, "-inf", 0},          {CLI_ANY, "1e39", 0},          {CLI_NONNEG, "0", 1},
        {CLI_NONNEG, "-1e-9", 0},      {CLI_POSITIVE, "1e-30", 1},    {CLI_POSITIVE, "0", 0},
        {CLI_AT_LEAST_1, "1", 1},      {CLI_AT_LEAST_1, "0.5", 0},    {CLI_UNIT, "1", 1},
        {CLI_UNIT, "1.5", 0},          {CLI_UNIT_OPEN, "0", 1},       {CLI_UNIT_OPEN, "1", 0},
        {CLI_UNIT_POS, "1", 1},        {CLI_UNIT_POS, "0", 0},        {CLI_UNIT_POS, "0.9", 1},
        {CLI_UNSET_OR_POSITIVE, "-1", 1}, {CLI_UNSET_OR_POSITIVE, "0", 0}, {CLI_UNSET_OR_POSITIVE, "-2", 0},
        {CLI_UNSET_OR_POSITIVE, "0.25", 1}, {CLI_PORT, "65535", 1},   {CLI_PORT, "65536", 0},
    };
    float x = 0;
    CliFlag one[] = {{"x", CLI_FLOAT, &x, "a number"}};
    CliSpec cs = {.prog = "prog", .usage = "prog", .flags = one, .n_flags = 1};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        one[0].check = cases[i].check;
        x = 42;
        char *av[] = {"prog", "--x", (char *)cases[i].value};
        int rc = cli_parse(&cs, 3, av);
        if (cases[i].ok) {
            CHECK(rc == 0 && x == strtof(cases[i].value, NULL), "check %d accepts %s: %s", cases[i].check, cases[i].value, align_error());
        } else {
            CHECK(rc == -1 && x == 42 && strstr(align_error(), "--x") && strstr(align_error(), cases[i].value),
                  "check %d refuses %s, naming the flag and value: %s", cases[i].check, cases[i].value, align_error());
        }
    }
    /* an int flag goes through the same checks */
    int k = 5;
    CliFlag ints[] = {{"k", CLI_INT, &k, "a count", CLI_UNSET_OR_POSITIVE}};
    CliSpec is = {.prog = "prog", .usage = "prog", .flags = ints, .n_flags = 1};
    char *ai1[] = {"prog", "--k", "-1"}, *ai2[] = {"prog", "--k=0"};
    CHECK(cli_parse(&is, 3, ai1) == 0 && k == -1, "int -1 sentinel accepted: %s", align_error());
    CHECK(cli_parse(&is, 2, ai2) == -1 && strstr(align_error(), "--k") && k == -1, "int 0 refused: %s", align_error());
    /* the config file is checked as argv is: numbers and strings */
    one[0].check = CLI_POSITIVE;
    const char *configs[] = {"{\"x\": -1}", "{\"x\": 0}", "{\"x\": \"nan\"}", "{\"x\": 1e400}", "{\"x\": 1e39}"};
    for (int i = 0; i < 5; i++) {
        fd = open(path, O_WRONLY | O_TRUNC);
        CHECK(write(fd, configs[i], strlen(configs[i])) > 0, "write config");
        close(fd);
        char *ac[] = {"prog", "--config", path};
        x = 42;
        CHECK(cli_parse(&cs, 3, ac) == -1 && x == 42 && strstr(align_error(), "\"x\"") && strstr(align_error(), path),
              "config %s refused, naming the key and file: %s", configs[i], align_error());
        cli_free(&cs);
    }

    /* TRL's names: aliases and '_' for '-', on argv and as config keys */
    static float alr;
    static int abatch, aaccum, asteps;
    static const char *aout;
    CliFlag trl[] = {
        {"lr", CLI_FLOAT, &alr, "learning rate", CLI_NONNEG},
        {"batch-size", CLI_INT, &abatch, "batch", CLI_AT_LEAST_1},
        {"grad-accum", CLI_INT, &aaccum, "accumulation", CLI_AT_LEAST_1},
        {"max-steps", CLI_INT, &asteps, "steps", CLI_UNSET_OR_POSITIVE},
        {"out", CLI_STRING, &aout, "output"},
    };
    CliSpec ts = {.prog = "prog", .usage = "prog", .flags = trl, .n_flags = 5};
    char *at1[] = {"prog", "--learning_rate", "3e-4", "--per_device_train_batch_size=4", "--gradient-accumulation-steps", "2",
                   "--max_steps", "9", "--output_dir", "o"};
    CHECK(cli_parse(&ts, 10, at1) == 0, "TRL names on argv: %s", align_error());
    CHECK(alr == 3e-4f && abatch == 4 && aaccum == 2 && asteps == 9 && !strcmp(aout, "o"), "TRL names set our flags");
    CHECK(cli_was_set(&ts, "lr") && cli_was_set(&ts, "batch-size"), "an alias marks our flag as set");
    char *at2[] = {"prog", "--learning-rate", "-1"};
    CHECK(cli_parse(&ts, 3, at2) == -1 && strstr(align_error(), "--lr"), "an alias is checked as its flag: %s", align_error());
    fd = open(path, O_WRONLY | O_TRUNC);
    const char *trl_json = "{\"learning_rate\": 1e-3, \"gradient_accumulation_steps\": 8, \"max_steps\": 5}";
    CHECK(write(fd, trl_json, strlen(trl_json)) > 0, "write config");
    close(fd);
    char *at3[] = {"prog", "--config", path, "--lr", "0.5"};
    alr = 0, aaccum = 0, asteps = 0;
    CHECK(cli_parse(&ts, 3, at3) == 0 && alr == 1e-3f && aaccum == 8 && asteps == 5, "TRL keys in --config: %s", align_error());
    for (int i = 0; i < ts.n_flags; i++) trl[i].set = 0;
    CHECK(cli_parse(&ts, 5, at3) == 0 && alr == 0.5f, "our flag overrides the config's alias: %s", align_error());
    cli_free(&ts);
    /* an alias whose flag this program lacks is unknown */
    char *at4[] = {"prog", "--num_train_epochs", "3"};
    CHECK(cli_parse(&ts, 3, at4) == -1 && strstr(align_error(), "unknown flag --num_train_epochs"), "absent target: %s", align_error());

    /* the nearest flag for a typo, through aliases too */
    char *at5[] = {"prog", "--lerning-rate", "1"};
    CHECK(cli_parse(&ts, 3, at5) == -1 && strstr(align_error(), "unknown flag --lerning-rate; did you mean --lr?"),
          "typo of an alias: %s", align_error());
    char *at6[] = {"prog", "--max-step", "1"};
    CHECK(cli_parse(&ts, 3, at6) == -1 && strstr(align_error(), "did you mean --max-steps?"), "typo of a flag: %s", align_error());
    char *at7[] = {"prog", "--zzzzzzzz", "1"};
    CHECK(cli_parse(&ts, 3, at7) == -1 && !strstr(align_error(), "did you mean"), "nothing near, no guess: %s", align_error());
    fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(write(fd, "{\"grad_acum\": 2}", 16) == 16, "write config");
    close(fd);
    char *at8[] = {"prog", "--config", path};
    CHECK(cli_parse(&ts, 3, at8) == -1 && strstr(align_error(), "did you mean \"grad-accum\"?") && strstr(align_error(), path),
          "typo of a config key: %s", align_error());
    cli_free(&ts);
    unlink(path);
    return test_summary();
}
