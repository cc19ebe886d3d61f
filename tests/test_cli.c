/* The shared command-line contract: flags of every type, --flag=value,
 * booleans and --no-X, --config JSON with flags overriding it, positionals,
 * and one clear error naming the flag or config key for bad input. */
#include <stdio.h>
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
    unlink(path);
    return test_summary();
}
