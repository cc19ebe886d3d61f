/* verify: rule-based rewards (RL with verifiable rewards), pure functions
 * of a completion's text, the prompt record's label and the completion's
 * length, testable without a model (tests/test_verify.c).
 *
 *   math      1 when the completion's final answer equals the label's as a
 *             number (or, when either is not a number, as normalised text),
 *             else 0. The final answer is, in this order: the last
 *             \boxed{...} (braces balanced), the text after the last GSM8K
 *             "####", the last number in the text. The label goes through
 *             the same extraction when it has \boxed or "####" (a GSM8K
 *             answer field is "reasoning ... #### 42"), else it is taken
 *             whole. Numbers: sign, thousands separators ("1,234"), a
 *             decimal part ("42.0" == "42"), a fraction ("3/4", \frac{3}{4},
 *             \dfrac) and a leading "$" or trailing "%" or "." are accepted;
 *             equal within 1e-9 relative (fractions are not exact in binary).
 *   exact     1 when the completion, trimmed of surrounding whitespace,
 *             equals the trimmed label, else 0.
 *   regex     1 when the label, read as a PCRE2 pattern, matches anywhere
 *             in the completion (anchor it with ^ and $ to match all), else 0.
 *   format    1 when the pattern given by the user matches the completion
 *             (compiled with DOTALL, so "." crosses lines: a
 *             "^<think>.*</think>" pattern spans a multi-line thought).
 *   length    n_tokens / max_tokens, in [0, 1]: weigh it negatively to
 *             penalise length (length:-0.1), positively to reward it.
 *   overlong  DAPO's soft overlong punishment (Yu et al. 2025, eq. 13) with
 *             L_max = max_tokens and L_cache = buffer:
 *               0                                   n <= L_max - L_cache
 *               ((L_max - L_cache) - n) / L_cache   L_max - L_cache < n <= L_max
 *               -1                                  n > L_max
 *             so it falls linearly from 0 to -1 over the last `buffer`
 *             tokens before the limit.
 * A missing label (NULL) scores 0 in math, exact and regex: the completion
 * cannot be verified, and rewarding it would teach nothing. */
#ifndef ALIGN_VERIFY_H
#define ALIGN_VERIFY_H

#include <stddef.h>

/* The final answer of `text` (see math above) into out (NUL-terminated,
 * truncated to cap - 1 bytes). 0 = found, -1 = no answer in the text. */
int verify_extract_answer(const char *text, char *out, size_t cap);

/* A number written as above ("1,234.50", "-3/4", "\frac{1}{2}", "$5",
 * "12%"): 0 with *value set, -1 when the text is not one number. */
int verify_parse_number(const char *s, double *value);

/* 1.0 or 0.0, as described above. */
double verify_math(const char *completion, const char *label);
double verify_exact(const char *completion, const char *label);

/* A compiled PCRE2 pattern (regex labels, the format rule). */
typedef struct VerifyPattern VerifyPattern;

/* NULL with a sentence naming `what` (a flag, a record) and the pattern's
 * error offset when it does not compile. */
VerifyPattern *verify_pattern_new(const char *pattern, const char *what);
void verify_pattern_free(VerifyPattern *p);
/* 1 = matches somewhere in text, 0 = no match, -1 = the matcher failed
 * (a resource limit; sentence set). */
int verify_pattern_match(const VerifyPattern *p, const char *text);

/* regex: the label as a pattern (compiled per call; labels differ per
 * record). -1 with a sentence when it does not compile. */
int verify_regex(const char *completion, const char *label, double *out);

/* Text as a verifier or a remote function may read it: every byte sequence
 * that is not valid UTF-8 (a byte-level tokenizer's sample can stop inside a
 * character, or be any bytes) becomes U+FFFD, as Hugging Face's decode does
 * (errors="replace"); JSON needs valid UTF-8. A new string (malloc). */
char *verify_utf8_clean(const char *s, size_t n);

double verify_length(int n_tokens, int max_tokens);
double verify_overlong(int n_tokens, int max_tokens, int buffer);

#endif
