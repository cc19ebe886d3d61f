/* test_chat_template_families: align's C renderers of the model families'
 * chat templates against transformers' apply_chat_template on the real
 * template strings (tests/fixtures/chat_templates/, rendered.json made by
 * tests/fixtures/make_chat_template_fixtures.py), byte for byte, over
 * single- and multi-turn conversations, with and without a system
 * message, generation prompt on and off, Qwen3's enable_thinking both ways;
 * where the Jinja raises, align refuses. Also: each real template string
 * is recognised as its family (and still is after a whitespace revision),
 * templates of unknown families are not taken for a known one, and the
 * training split (prompt + completion [+ between + completion]) rebuilds
 * the model's own rendering. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat_template.h"
#include "test.h"
#include "util.h"

#define DIR ALIGN_TEST_DIR "/fixtures/chat_templates/"

static char *slurp(const char *name) {
    char path[512];
    snprintf(path, sizeof path, DIR "%s", name);
    size_t n;
    return align_read_file(path, &n);
}

static int messages(const cJSON *arr, ChatMessage *out, int cap) {
    int n = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, arr) {
        if (n == cap) break;
        out[n].role = cJSON_GetObjectItemCaseSensitive(m, "role")->valuestring;
        out[n].content = cJSON_GetObjectItemCaseSensitive(m, "content")->valuestring;
        n++;
    }
    return n;
}

/* a revision of the same template with other whitespace control: "{%- " ->
 * "{% ", "{{- " -> "{{ ", newlines between tags indented */
static char *reindent(const char *s) {
    size_t n = strlen(s);
    char *o = malloc(3 * n + 1), *p = o;
    for (size_t i = 0; i < n; i++) {
        if ((!strncmp(s + i, "{%- ", 4) || !strncmp(s + i, "{{- ", 4))) {
            *p++ = s[i], *p++ = s[i + 1], *p++ = ' ';
            i += 3;
            continue;
        }
        *p++ = s[i];
        if (s[i] == '\n') *p++ = ' ', *p++ = ' ';
    }
    *p = 0;
    return o;
}

static void test_detection(const cJSON *templates) {
    const cJSON *t;
    cJSON_ArrayForEach(t, templates) {
        const char *file = cJSON_GetObjectItemCaseSensitive(t, "file")->valuestring;
        const char *family = cJSON_GetObjectItemCaseSensitive(t, "family")->valuestring;
        char *jinja = slurp(file);
        CHECK(jinja != NULL, "read %s", file);
        if (!jinja) continue;
        ChatTemplate got;
        int rc = chat_template_detect(jinja, &got);
        CHECK(rc == CHAT_DETECT_MATCHED && !strcmp(chat_template_name(got), family), "%s is %s (got %s, rc %d)", file,
              family, chat_template_name(got), rc);
        char *re = reindent(jinja);
        rc = chat_template_detect(re, &got);
        CHECK(rc == CHAT_DETECT_MATCHED && !strcmp(chat_template_name(got), family),
              "%s re-indented is still %s (got %s)", file, family, chat_template_name(got));
        const char *name = chat_template_detect_name(jinja);
        CHECK(name && !strcmp(name, family), "detect_name(%s) = %s", file, name ? name : "(null)");
        free(re);
        free(jinja);
    }
    /* templates of families align does not render: never taken for one it does */
    const char *unknown[] = {
        /* Qwen2-Instruct: ChatML with its own default system message */
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n"
        "You are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}",
        /* Mistral-7B-Instruct-v0.2: no system message at all */
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
        "message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + "
        "eos_token}}{% endif %}{% endfor %}",
        /* phi-4 as first released: the assistant header after every user turn */
        "{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + "
        "message['content'] + '<|im_end|><|im_start|>assistant<|im_sep|>'}}{% endif %}{% endfor %}",
        /* Mistral-Small-3 (v7-tekken): a dated default system message */
        "{%- set today = strftime_now(\"%Y-%m-%d\") %}{%- set default_system_message = \"You are Mistral Small 3\" "
        "%}{{- bos_token }}{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}{{- '[INST]' + "
        "message['content'] + '[/INST]' }}",
        /* Llama 3.2 Vision */
        "{{- bos_token }}{%- set date_string = strftime_now(\"%d %b %Y\") %}{{- \"<|start_header_id|>system"
        "<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: December 2023\\n\" }}{{- \"Today Date: \" + "
        "date_string }}{{- '<|image|>' }}",
    };
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        ChatTemplate got;
        int rc = chat_template_detect(unknown[i], &got);
        CHECK(rc == CHAT_DETECT_UNKNOWN, "unknown template %zu is not taken for %s", i, chat_template_name(got));
    }
}

/* The rendering transformers gives, and align's; plus the training split. */
static void test_renderings(const cJSON *templates) {
    int n_cases = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, templates) {
        const char *tfamily = cJSON_GetObjectItemCaseSensitive(t, "family")->valuestring;
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(t, "cases")) {
            const cJSON *fam = cJSON_GetObjectItemCaseSensitive(c, "family");
            const char *family = fam ? fam->valuestring : tfamily;
            const char *name = cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring;
            int gen = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "add_generation_prompt"));
            const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "text");
            ChatTemplate tmpl;
            if (chat_template_from_name(family, &tmpl)) {
                CHECK(0, "no template named %s: %s", family, align_error());
                continue;
            }
            ChatMessage m[8];
            int n = messages(cJSON_GetObjectItemCaseSensitive(c, "messages"), m, 8);
            char *got = chat_render_text(tmpl, m, n, gen);
            n_cases++;
            if (!want) {
                CHECK(got == NULL, "%s / %s / gen %d: transformers raises (%s), align renders", family, name, gen,
                      cJSON_GetObjectItemCaseSensitive(c, "error")->valuestring);
                free(got);
                continue;
            }
            CHECK(got && !strcmp(got, want->valuestring), "%s / %s / gen %d:\n got  [%s]\n want [%s]", family, name,
                  gen, got ? got : align_error(), want->valuestring);
            free(got);

            /* prompt (generation prompt on) + completion + what the template
             * writes after the end marker = the model's rendering, where the
             * last message is the reply */
            int skip = gen || n < 2 || strcmp(m[n - 1].role, "assistant") ||
                       !strcmp(family, "deepseek-r1") ||                     /* prompt ends <think>\n, replies lose it */
                       (!strncmp(family, "mistral-v3", 10) && !strcmp(m[0].role, "system")) || /* system dropped */
                       (!strcmp(family, "qwen3-nothink") && strstr(m[n - 1].content, "</think>"));
            if (skip) continue;
            char *p = NULL, *comp = NULL;
            if (chat_render_split_text(tmpl, m, n - 1, m[n - 1].content, &p, &comp)) {
                CHECK(0, "%s / %s split: %s", family, name, align_error());
                continue;
            }
            size_t pl = strlen(p), cl = strlen(comp);
            const char *w = want->valuestring;
            int prefix = !strncmp(w, p, pl) && !strncmp(w + pl, comp, cl);
            CHECK(prefix, "%s / %s: prompt + completion starts the rendering:\n [%s%s]\n [%s]", family, name, p, comp,
                  w);
            /* and what follows is only what the template writes after the
             * end marker and the model never generates */
            const char *rest = prefix ? w + pl + cl : "";
            CHECK(!strcmp(rest, "") || !strcmp(rest, "\n") || !strcmp(rest, "\n<|endoftext|>"),
                  "%s / %s: after the reply only the trailer: [%s]", family, name, rest);
            free(p);
            free(comp);
        }
    }
    CHECK(n_cases > 300, "%d cases compared", n_cases);
}

/* Multi-turn training pieces: prompt, reply, between, reply = the
 * rendering of the whole conversation (less the final trailer). Qwen3 and
 * DeepSeek-R1 drop past turns' reasoning where align trains every reply as
 * generated (with its <think> block), so they are not compared here. */
static void test_multi_turn_split(const cJSON *templates) {
    const cJSON *t;
    cJSON_ArrayForEach(t, templates) {
        const char *family = cJSON_GetObjectItemCaseSensitive(t, "family")->valuestring;
        if (!strcmp(family, "qwen3") || !strcmp(family, "deepseek-r1")) continue;
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(t, "cases")) {
            if (strcmp(cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring, "multi+reply") ||
                cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "add_generation_prompt")))
                continue;
            const cJSON *fam = cJSON_GetObjectItemCaseSensitive(c, "family"); /* a variant (enable_thinking) */
            const char *cfamily = fam ? fam->valuestring : family;
            ChatTemplate tmpl;
            chat_template_from_name(cfamily, &tmpl);
            ChatMessage m[8];
            int n = messages(cJSON_GetObjectItemCaseSensitive(c, "messages"), m, 8); /* U1 A1 U2 A2 */
            CHECK(n == 4, "multi+reply has 4 messages");
            char *p = NULL, *c1 = NULL, *c2 = NULL, *dummy = NULL;
            ChatText between;
            int rc = chat_render_split_text(tmpl, m, 1, m[1].content, &p, &c1) ||
                     chat_render_split_text(tmpl, m, 0, m[3].content, &dummy, &c2) ||
                     chat_render_between(tmpl, m + 2, 1, &between);
            CHECK(rc == 0, "%s multi-turn pieces: %s", cfamily, align_error());
            if (rc) continue;
            char whole[2048];
            snprintf(whole, sizeof whole, "%s%s%s%s", p, c1, between.text, c2);
            const char *w = cJSON_GetObjectItemCaseSensitive(c, "text")->valuestring;
            CHECK(!strncmp(w, whole, strlen(whole)), "%s: prompt + reply + between + reply starts the rendering:\n [%s]\n [%s]",
                  cfamily, whole, w);
            free(p), free(c1), free(c2), free(dummy);
            chat_text_free(&between);
        }
    }
}

/* Control tokens are control spans (encoded by id), content stays text. */
static void test_spans(void) {
    ChatMessage m[2] = {{"system", "S"}, {"user", "<end_of_turn> hi"}};
    ChatText ct;
    CHECK(chat_render(CHAT_TEMPLATE_GEMMA3, m, 2, 1, &ct) == 0, "gemma3 render: %s", align_error());
    int ctl = 0, content_is_text = 0;
    size_t at = (size_t)(strstr(ct.text, "<end_of_turn> hi") - ct.text);
    for (int i = 0; i < ct.n_spans; i++) {
        ctl += ct.spans[i].control;
        if (!ct.spans[i].control && ct.spans[i].off <= at && at + 16 <= ct.spans[i].off + ct.spans[i].len)
            content_is_text = 1;
    }
    /* <bos> <start_of_turn> <end_of_turn> <start_of_turn> */
    CHECK(ctl == 4, "gemma3: 4 control spans, got %d", ctl);
    CHECK(content_is_text, "the content's <end_of_turn> stays text");
    chat_text_free(&ct);
    CHECK(!strcmp(chat_template_end_marker(CHAT_TEMPLATE_GEMMA3), "<end_of_turn>") &&
              !strcmp(chat_template_end_marker(CHAT_TEMPLATE_PHI3), "<|end|>") &&
              !strcmp(chat_template_end_marker(CHAT_TEMPLATE_MISTRAL_V7), "</s>"),
          "end markers");
    ChatTemplate t;
    CHECK(chat_template_from_name("gemma7", &t) != 0 && strstr(align_error(), "qwen2.5") &&
              strstr(align_error(), "mistral-v7"),
          "an unknown name lists the families: %s", align_error());
}

int main(void) {
    setenv("SOURCE_DATE_EPOCH", "1721952000", 1); /* 26 Jul 2024, the date the fixtures pin (Llama 3.2, SmolLM3) */
    char *json = slurp("rendered.json");
    CHECK(json != NULL, "read rendered.json");
    if (!json) return test_summary();
    cJSON *root = cJSON_Parse(json);
    const cJSON *templates = cJSON_GetObjectItemCaseSensitive(root, "templates");
    CHECK(cJSON_GetArraySize(templates) >= 18, "fixture templates");
    test_detection(templates);
    test_renderings(templates);
    test_multi_turn_split(templates);
    test_spans();
    cJSON_Delete(root);
    free(json);
    return test_summary();
}
