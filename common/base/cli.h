/* cli: the command-line contract every program shares.
 *
 * A program declares its flags in one table (name, type, destination,
 * help); cli_parse fills the destinations from `--config FILE.json` first
 * (keys are the long flag names, without dashes) and then from argv, so
 * flags override the config. `--help` prints the table. Every error names
 * the flag or the config file and key at fault; an unknown one names the
 * nearest flag ("did you mean --lr?"). Positional arguments are collected
 * in order for the caller.
 *
 * Names compare with '-' and '_' alike, and TRL's TrainingArguments names
 * (learning_rate, per_device_train_batch_size, gradient_accumulation_steps,
 * num_train_epochs, lr_scheduler_type, save_steps, eval_steps, output_dir,
 * ...) are aliases of ours wherever our flag exists, on the command line
 * and as --config keys. */
#ifndef ALIGN_CLI_H
#define ALIGN_CLI_H

typedef enum { CLI_INT, CLI_FLOAT, CLI_STRING, CLI_BOOL } CliType;

/* What a numeric flag accepts, checked when it is parsed (from argv or the
 * config), so a bad value stops the program before it loads anything. A
 * float flag is always finite, whatever its check. */
typedef enum {
    CLI_ANY = 0,    /* any (finite) value */
    CLI_NONNEG,     /* >= 0 */
    CLI_POSITIVE,   /* > 0 */
    CLI_AT_LEAST_1, /* >= 1 (counts, sizes) */
    CLI_UNIT,       /* in [0, 1] */
    CLI_UNIT_OPEN,  /* in [0, 1) (dropout, label smoothing below 1) */
    CLI_PORT,       /* a TCP port number 0..65535 (what 0 means is the flag's to say) */
    CLI_UNIT_POS,   /* in (0, 1] (top-p: a probability mass, 1 = off) */
    CLI_UNSET_OR_POSITIVE, /* -1 (the documented "unset": off or a derived default) or > 0 */
} CliCheck;

typedef struct {
    const char *name;   /* long name without dashes: "lr", "batch-size" */
    CliType type;
    void *dst;          /* int*, float*, const char**, int* (bool) */
    const char *help;
    CliCheck check;     /* numeric flags: the values accepted */
    int set;            /* filled in: 1 when given by config or argv */
} CliFlag;

typedef struct {
    const char *prog;
    const char *usage;   /* e.g. "dpo_run --policy M --data prefs.jsonl --out O [flags]" */
    const char *about;   /* one paragraph */
    CliFlag *flags;
    int n_flags;
    int min_positional, max_positional;
    const char *positional[8]; /* filled in */
    int n_positional;
} CliSpec;

/* Returns 0 on success, 1 when --help was printed (exit 0), -1 on error
 * (message in align_error()). Strings point into argv or into the config
 * JSON, which stays alive until cli_free. */
int cli_parse(CliSpec *spec, int argc, char **argv);
void cli_print_help(const CliSpec *spec);
/* Was the flag named `name` set? */
int cli_was_set(const CliSpec *spec, const char *name);
void cli_free(CliSpec *spec);
/* The spec the program's flags were parsed with (the last cli_parse; NULL
 * before it and after cli_free): the ranks of a data-parallel job compare
 * their flags through it (common/train/job_agree.h). */
const CliSpec *cli_parsed(void);

/* Parse the whole program invocation or exit: prints help and exits 0 for
 * --help, prints "prog: error" and exits 2 for bad usage. */
void cli_parse_or_exit(CliSpec *spec, int argc, char **argv);

/* Bad usage found after parsing (flags that combine badly): prints
 * "prog: sentence" and exits 2, as cli_parse_or_exit does for one flag. */
void cli_usage_error(const CliSpec *spec, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

#endif
