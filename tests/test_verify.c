/* The rule-based rewards (reward/verify.h): answer extraction, numeric
 * equivalence, exact / regex / format matching, length and DAPO's overlong
 * penalty. Expected values are worked out by hand from the definitions. */
#include <string.h>

#include "test.h"
#include "util.h"
#include "reward_http.h"
#include "reward_terms.h"
#include "verify.h"

static void check_extract(const char *text, const char *want) {
    char got[128];
    int rc = verify_extract_answer(text, got, sizeof got);
    if (!want) {
        CHECK(rc == -1, "extract(%s): expected no answer, got \"%s\"", text, got);
        return;
    }
    CHECK(rc == 0 && !strcmp(got, want), "extract(%s): got \"%s\" want \"%s\"", text, rc ? "(none)" : got, want);
}

static void check_number(const char *s, int ok, double want) {
    double v = -12345;
    int rc = verify_parse_number(s, &v);
    if (!ok) {
        CHECK(rc == -1, "parse_number(%s): expected not a number, got %g", s, v);
        return;
    }
    CHECK(rc == 0 && fabs(v - want) < 1e-12, "parse_number(%s): got rc %d value %.17g want %.17g", s, rc, v, want);
}

int main(void) {
    /* extraction order: \boxed, then ####, then the last number */
    check_extract("so x = 3 and \\boxed{42} then 7", "42");
    check_extract("\\boxed{1} first, finally \\boxed{ \\frac{3}{4} }", "\\frac{3}{4}");
    check_extract("nested \\boxed{\\text{a {b} c}} end", "\\text{a {b} c}");
    check_extract("unclosed \\boxed{12 but \\boxed{5} earlier? no: \\boxed{7", "5");
    check_extract("Natalia sold 48/2 = 24 clips.\n#### 72", "72");
    check_extract("#### 1,000\nmore text 5", "1,000");
    check_extract("There are 3 apples and 1,234.5 pears.", "1,234.5");
    check_extract("it is -7 degrees", "-7");
    check_extract("x-5", "5"); /* a minus glued to a word is subtraction, not a sign */
    check_extract("a ratio of 3/4.", "3/4");
    check_extract("model2 has no number", NULL);
    check_extract("", NULL);

    check_number("42", 1, 42);
    check_number(" 42.0 ", 1, 42);
    check_number("1,234", 1, 1234);
    check_number("1,234,567.25", 1, 1234567.25);
    check_number("-3/4", 1, -0.75);
    check_number("\\frac{3}{4}", 1, 0.75);
    check_number("-\\dfrac{1}{8}", 1, -0.125);
    check_number("$5", 1, 5);
    check_number("\\$5.50", 1, 5.5);
    check_number("12%", 1, 12);
    check_number("7.", 1, 7);
    check_number(".5", 1, 0.5);
    check_number("{9}", 1, 9);
    check_number("1,23", 0, 0);
    check_number("3/0", 0, 0);
    check_number("abc", 0, 0);
    check_number("4 apples", 0, 0);
    check_number("", 0, 0);

    /* math: numeric equivalence across the forms */
    CHECK(verify_math("The answer is \\boxed{0.75}", "3/4") == 1, "0.75 == 3/4");
    CHECK(verify_math("so #### 72", "Natalia sold 48/2 = 24 clips in May.\n#### 72") == 1, "GSM8K label");
    CHECK(verify_math("I get 1,000 total", "1000") == 1, "thousands separator");
    CHECK(verify_math("I get 1000.0 total", "1,000") == 1, "trailing .0");
    CHECK(verify_math("\\boxed{\\frac{1}{3}}", "0.3333") == 0, "1/3 is not 0.3333");
    CHECK(verify_math("\\boxed{\\frac{1}{3}}", "\\boxed{\\dfrac{1}{3}}") == 1, "boxed label");
    CHECK(verify_math("answer: 73", "72") == 0, "wrong number");
    CHECK(verify_math("no number here", "72") == 0, "no answer");
    CHECK(verify_math("\\boxed{B}", "b") == 1, "text answers: case and spaces ignored");
    CHECK(verify_math("\\boxed{B}", "C") == 0, "text answers differ");
    CHECK(verify_math("42", NULL) == 0, "no label");

    CHECK(verify_exact("  Paris\n", "Paris") == 1, "exact trims");
    CHECK(verify_exact("Paris.", "Paris") == 0, "exact is exact");
    CHECK(verify_exact("Paris", NULL) == 0, "exact without a label");

    double r = -1;
    CHECK(verify_regex("the year 1969 it was", "19[0-9]{2}", &r) == 0 && r == 1, "regex matches anywhere");
    CHECK(verify_regex("the year 1969 it was", "^19[0-9]{2}$", &r) == 0 && r == 0, "regex anchored");
    CHECK(verify_regex("x", "([", &r) == -1 && strstr(align_error(), "regex label"), "bad regex named: %s", align_error());

    VerifyPattern *fmt = verify_pattern_new("^<think>.*</think>\\s*\\S", "--format-pattern");
    CHECK(fmt != NULL, "format pattern compiles");
    CHECK(verify_pattern_match(fmt, "<think>a\nb\nc</think>\n42") == 1, "format spans lines (DOTALL)");
    CHECK(verify_pattern_match(fmt, "42 <think>x</think> y") == 0, "format anchored at the start");
    CHECK(verify_pattern_match(fmt, "<think>unclosed 42") == 0, "format needs the closing tag");
    CHECK(verify_pattern_match(fmt, "<think>\xe2\x82</think> \xff") == 1, "format on bytes cut mid-character");
    verify_pattern_free(fmt);
    CHECK(verify_pattern_new("(unclosed", "--format-pattern") == NULL && strstr(align_error(), "--format-pattern"),
          "a bad pattern names the flag: %s", align_error());

    CHECK_CLOSE(verify_length(16, 64), 0.25, 0, 1e-15, "length 16/64");
    CHECK_CLOSE(verify_length(80, 64), 1.0, 0, 1e-15, "length capped at 1");
    /* DAPO: L_max 64, L_cache 16: 0 up to 48, linear to -1 at 64, -1 beyond */
    CHECK_CLOSE(verify_overlong(48, 64, 16), 0.0, 0, 1e-15, "overlong at the buffer's start");
    CHECK_CLOSE(verify_overlong(52, 64, 16), -0.25, 0, 1e-15, "overlong a quarter in");
    CHECK_CLOSE(verify_overlong(64, 64, 16), -1.0, 0, 1e-15, "overlong at the limit");
    CHECK_CLOSE(verify_overlong(65, 64, 16), -1.0, 0, 1e-15, "overlong past the limit");
    CHECK_CLOSE(verify_overlong(10, 64, 0), 0.0, 0, 1e-15, "no buffer, under the limit");

    /* invalid UTF-8 becomes U+FFFD, valid text is kept */
    char *u8 = verify_utf8_clean("a\xc3\xa9" "b\xf0\x9f\xcc\xed\xa0\x80", 10);
    CHECK(u8 && !strcmp(u8, "a\xc3\xa9" "b\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"),
          "utf8 clean: %s", u8);
    free(u8);

    /* the --reward list */
    RewardSpec sp;
    CHECK(reward_spec_parse("math,format:0.2,rm.ckpt:0.5,length:-0.1", &sp) == 0 && sp.n == 4, "spec: %s", align_error());
    CHECK(sp.t[0].kind == RT_MATH && sp.t[0].weight == 1.0, "math weight 1");
    CHECK(sp.t[1].kind == RT_FORMAT && sp.t[1].weight == 0.2, "format 0.2");
    CHECK(sp.model == 2 && sp.t[2].kind == RT_MODEL && !strcmp(sp.t[2].path, "rm.ckpt") && sp.t[2].weight == 0.5,
          "model term");
    CHECK(sp.t[3].kind == RT_LENGTH && sp.t[3].weight == -0.1, "negative weight");
    CHECK(reward_spec_parse("/models/a:b", &sp) == 0 && sp.model == 0 && !strcmp(sp.t[0].path, "/models/a:b") &&
              sp.t[0].weight == 1.0, "a path with a colon");
    CHECK(reward_spec_parse("math,math:2", &sp) == -1 && strstr(align_error(), "twice"), "%s", align_error());
    CHECK(reward_spec_parse("a.ckpt,b.ckpt", &sp) == -1 && strstr(align_error(), "two reward models"), "%s", align_error());
    CHECK(reward_spec_parse("math,,exact", &sp) == -1 && strstr(align_error(), "empty"), "%s", align_error());
    RewardRuleCtx ctx = {NULL, 64, 16};
    double v;
    CHECK(reward_spec_parse("format,overlong", &sp) == 0, "spec");
    CHECK(reward_term_eval(&sp.t[0], &ctx, "x", NULL, 1, &v) == -1 && strstr(align_error(), "--format-pattern"),
          "format without a pattern: %s", align_error());
    CHECK(reward_term_eval(&sp.t[1], &ctx, "x", NULL, 56, &v) == 0 && v == -0.5, "overlong term");

    RewardUrl u;
    CHECK(reward_url_parse("http://127.0.0.1:5000/get_reward", &u) == 0 && !strcmp(u.host, "127.0.0.1") &&
              !strcmp(u.port, "5000") && !strcmp(u.path, "/get_reward"), "url");
    CHECK(reward_url_parse("http://localhost", &u) == 0 && !strcmp(u.port, "80") && !strcmp(u.path, "/"), "url defaults");
    CHECK(reward_url_parse("https://x/y", &u) == -1 && strstr(align_error(), "https"), "https refused");
    CHECK(reward_url_parse("http://h:99999/", &u) == -1 && strstr(align_error(), "port"), "bad port");
    /* nothing listens on port 1: a clear error after the retries */
    RewardHttpOpts ho = {1.0, 1};
    RewardHttpReply rep;
    const char *q[1] = {"q"};
    CHECK(reward_http_call("http://127.0.0.1:1/get_reward", &ho, q, q, NULL, 1, &rep) == -1 &&
              strstr(align_error(), "after 2 tries") && strstr(align_error(), "connect"),
          "refused: %s", align_error());
    return test_summary();
}
