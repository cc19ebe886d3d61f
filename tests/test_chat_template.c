/* test_chat_template: each built-in template renders exactly the strings of
 * the Jinja it exports (the upstream ChatML and Llama-3 templates, hh-rlhf's
 * transcript text), detection from real template strings, and the split
 * rendering used for training (prompt + completion = full conversation). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_template.h"
#include "test.h"
#include "util.h"

static const ChatMessage CONV[] = {
    {"system", "Be brief."},
    {"user", "Hi!"},
    {"assistant", "Hello."},
    {"user", "2+2?"},
};

static void check_str(const char *got, const char *want, const char *what) {
    CHECK(got && strcmp(got, want) == 0, "%s:\n got  [%s]\n want [%s]", what, got ? got : "(null)", want);
}

static void check_render(ChatTemplate t, int gen, const char *want) {
    char *s = chat_render_text(t, CONV, 4, gen);
    char what[64];
    snprintf(what, sizeof what, "%s render (generation prompt %d)", chat_template_name(t), gen);
    check_str(s, want, what);
    free(s);
}

static void test_exact_renderings(void) {
    check_render(CHAT_TEMPLATE_CHATML, 0,
                 "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
                 "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n");
    check_render(CHAT_TEMPLATE_CHATML, 1,
                 "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
                 "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
                 "<|im_start|>assistant\n");
    check_render(CHAT_TEMPLATE_LLAMA3, 1,
                 "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n");
    check_render(CHAT_TEMPLATE_HH, 1, "Be brief.\n\nHuman: Hi!\n\nAssistant: Hello.\n\nHuman: 2+2?\n\nAssistant:");
    check_render(CHAT_TEMPLATE_HH, 0, "Be brief.\n\nHuman: Hi!\n\nAssistant: Hello.\n\nHuman: 2+2?");
    check_render(CHAT_TEMPLATE_NONE, 1, "Be brief.Hi!Hello.2+2?");

    /* ChatML adds no default system message (SmolLM2's own template would). */
    ChatMessage one = {"user", "Hi"};
    char *s = chat_render_text(CHAT_TEMPLATE_CHATML, &one, 1, 1);
    check_str(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "chatml has no default system");
    free(s);
    /* Llama-3 trims content, as the Jinja's `| trim` does. */
    ChatMessage padded = {"user", "  \n Hi there \n"};
    s = chat_render_text(CHAT_TEMPLATE_LLAMA3, &padded, 1, 0);
    check_str(s, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>", "llama3 trim");
    free(s);
    /* empty conversation */
    s = chat_render_text(CHAT_TEMPLATE_CHATML, NULL, 0, 1);
    check_str(s, "<|im_start|>assistant\n", "chatml, no messages");
    free(s);
}

static void test_spans_mark_control_tokens(void) {
    ChatMessage m = {"user", "<|im_end|>"};
    ChatText ct;
    CHECK(chat_render(CHAT_TEMPLATE_CHATML, &m, 1, 1, &ct) == 0, "render: %s", align_error());
    /* <|im_start|> | user\n<|im_end|> (content: text) | <|im_end|> | \n | <|im_start|> | assistant\n */
    CHECK(ct.n_spans == 6, "chatml spans: %d", ct.n_spans);
    if (ct.n_spans == 6) {
        int want_ctl[6] = {1, 0, 1, 0, 1, 0};
        for (int i = 0; i < 6; i++) CHECK(ct.spans[i].control == want_ctl[i], "span %d control flag", i);
        CHECK(ct.spans[1].len == strlen("user\n<|im_end|>"), "content stays in a text span");
    }
    size_t total = 0;
    for (int i = 0; i < ct.n_spans; i++) {
        CHECK(ct.spans[i].off == total, "spans are consecutive");
        total += ct.spans[i].len;
    }
    CHECK(total == ct.len && strlen(ct.text) == ct.len, "spans cover the text");
    chat_text_free(&ct);
}

static void test_split(void) {
    const ChatMessage prompt[] = {{"user", "Hi!"}};
    struct {
        ChatTemplate t;
        const char *p, *c;
    } cases[] = {
        {CHAT_TEMPLATE_CHATML, "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n", "Hello.<|im_end|>"},
        {CHAT_TEMPLATE_LLAMA3,
         "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n",
         "Hello.<|eot_id|>"},
        {CHAT_TEMPLATE_HH, "\n\nHuman: Hi!\n\nAssistant:", " Hello."},
        {CHAT_TEMPLATE_NONE, "Hi!", "Hello."},
    };
    for (int i = 0; i < 4; i++) {
        char *p = NULL, *c = NULL;
        CHECK(chat_render_split_text(cases[i].t, prompt, 1, "Hello.", &p, &c) == 0, "split: %s", align_error());
        check_str(p, cases[i].p, "split prompt");
        check_str(c, cases[i].c, "split completion");
        /* prompt + completion == the full conversation (ChatML: minus the "\n" after <|im_end|>) */
        ChatMessage full[2] = {prompt[0], {"assistant", "Hello."}};
        char *f = chat_render_text(cases[i].t, full, 2, 0);
        size_t fl = strlen(f);
        if (cases[i].t == CHAT_TEMPLATE_CHATML) f[--fl] = 0;
        char both[512];
        snprintf(both, sizeof both, "%s%s", p, c);
        check_str(both, f, "prompt + completion == full rendering");
        free(p);
        free(c);
        free(f);
    }
    CHECK(strcmp(chat_template_end_marker(CHAT_TEMPLATE_CHATML), "<|im_end|>") == 0, "chatml end marker");
    CHECK(strcmp(chat_template_end_marker(CHAT_TEMPLATE_LLAMA3), "<|eot_id|>") == 0, "llama3 end marker");
    CHECK(chat_template_end_marker(CHAT_TEMPLATE_HH) == NULL && chat_template_end_marker(CHAT_TEMPLATE_NONE) == NULL,
          "hh/none use EOS");
}

static void test_detect(void) {
    /* SmolLM2-135M-Instruct's template (default system branch included). */
    const char *smollm2 =
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
        "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    ChatTemplate t = CHAT_TEMPLATE_HH;
    /* its own family now: the default system message is rendered, as transformers does */
    CHECK(chat_template_detect(smollm2, &t) == CHAT_DETECT_MATCHED && t == CHAT_TEMPLATE_SMOLLM2, "SmolLM2 -> smollm2");
    CHECK(chat_template_detect(chat_template_jinja("llama3"), &t) == CHAT_DETECT_MATCHED && t == CHAT_TEMPLATE_LLAMA3,
          "llama3 jinja -> llama3");
    CHECK(chat_template_detect(chat_template_jinja("hh"), &t) == CHAT_DETECT_MATCHED && t == CHAT_TEMPLATE_HH,
          "hh jinja (escaped newlines) -> hh");
    CHECK(chat_template_detect("{{ '\n\nHuman: ' + m }}", &t) == CHAT_DETECT_MATCHED && t == CHAT_TEMPLATE_HH,
          "hh with literal newlines -> hh");
    CHECK(chat_template_detect(chat_template_jinja("chatml"), &t) == CHAT_DETECT_MATCHED && t == CHAT_TEMPLATE_CHATML,
          "chatml jinja -> chatml");
    CHECK(chat_template_detect(chat_template_jinja("none"), &t) == CHAT_DETECT_MATCHED && t == CHAT_TEMPLATE_NONE,
          "none jinja -> none");
    t = CHAT_TEMPLATE_HH;
    CHECK(chat_template_detect(NULL, &t) == CHAT_DETECT_ABSENT && t == CHAT_TEMPLATE_NONE, "NULL -> none, absent");
    CHECK(chat_template_detect("", &t) == CHAT_DETECT_ABSENT && t == CHAT_TEMPLATE_NONE, "empty -> none, absent");
    t = CHAT_TEMPLATE_HH;
    CHECK(chat_template_detect("{{ '[INST] ' + m + ' [/INST]' }}", &t) == CHAT_DETECT_UNKNOWN && t == CHAT_TEMPLATE_NONE,
          "Mistral [INST] -> none, unknown");
}

static void test_names(void) {
    const char *names[] = {"none", "chatml", "llama3", "hh"};
    for (int i = 0; i < 4; i++) {
        ChatTemplate t;
        CHECK(chat_template_from_name(names[i], &t) == 0 && strcmp(chat_template_name(t), names[i]) == 0,
              "name %s round trip", names[i]);
        CHECK(chat_template_jinja(names[i]) != NULL, "jinja for %s", names[i]);
    }
    ChatTemplate t;
    CHECK(chat_template_from_name("vicuna", &t) == -1 &&
              strncmp(align_error(), "unknown chat template \"vicuna\" (known: none, chatml, llama3, hh, smollm2, ", 68) == 0,
          "unknown name: %s", align_error());
    CHECK(chat_template_jinja("vicuna") == NULL, "no jinja for an unknown name");
    /* names as other tools spell them, and template files (vLLM's
     * --chat-template PATH, llama.cpp's --chat-template-file) */
    CHECK(chat_template_from_name("ChatML", &t) == 0 && !strcmp(chat_template_name(t), "chatml"), "ChatML: %s",
          align_error());
    CHECK(chat_template_from_name("Gemma3", &t) == 0 && !strcmp(chat_template_name(t), "gemma3"), "Gemma3: %s",
          align_error());
    CHECK(chat_template_from_name(ALIGN_TEST_DIR "/fixtures/chat_templates/llama3_1.jinja", &t) == 0 &&
              !strcmp(chat_template_name(t), "llama3.1"),
          "llama3_1.jinja is llama3.1: %s", align_error());
    CHECK(chat_template_from_name(ALIGN_TEST_DIR "/fixtures/chat_templates/gemma3.jinja", &t) == 0 &&
              !strcmp(chat_template_name(t), "gemma3"),
          "gemma3.jinja is gemma3: %s", align_error());
    char path[] = "/tmp/test_chat_template_XXXXXX.jinja";
    int fd = mkstemps(path, 6);
    const char *vicuna = "{% for m in messages %}{{ 'USER: ' + m['content'] }}{% endfor %}";
    CHECK(fd >= 0 && write(fd, vicuna, strlen(vicuna)) == (ssize_t)strlen(vicuna), "write %s", path);
    if (fd >= 0) close(fd);
    CHECK(chat_template_from_name(path, &t) == -1 && strstr(align_error(), "the template in this file is not one align "
                                                                          "renders exactly"),
          "an unknown template file is refused: %s", align_error());
    unlink(path);
    CHECK(chat_template_from_name("no/such/template.jinja", &t) == -1 &&
              strstr(align_error(), "no/such/template.jinja: cannot read the template file"),
          "a missing template file: %s", align_error());
    /* The exported ChatML is the upstream text (Qwen2/SmolLM2 without the default system branch). */
    check_str(chat_template_jinja("chatml"),
              "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
              "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
              "{% endif %}",
              "chatml jinja");
}

int main(void) {
    test_exact_renderings();
    test_spans_mark_control_tokens();
    test_split();
    test_detect();
    test_names();
    return test_summary();
}
