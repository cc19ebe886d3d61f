/* libFuzzer target: the message decoder every service runs on bytes from
 * the network: wire_parse and its getters, and the reward service's
 * "score" request decoder (reward/rm_proto.c, compiled in here because the
 * fuzz build links only the core library). No tokenizer: text requests
 * take the "no_tokenizer" path; token requests are decoded and checked in
 * full. Seed corpus: any message a test writes, e.g. a score request. */
#include <stdint.h>
#include <stdlib.h>

#include "../../reward/rm_proto.c"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    WireLimits lim = {.max_bytes = 1 << 20, .max_depth = 8, .max_elems = 1 << 18, .max_strings = 1024};
    WireMsg *m = wire_parse(data, size, &lim);
    if (!m) return 0;
    /* generic getters on every field name a service reads */
    static const char *keys[] = {"id", "tokens", "offsets", "prompt_tokens", "prompt_offsets", "texts", "scores"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        WireArray a;
        if (!wire_get_array(m, keys[k], -1, &lim, &a)) free(a.data);
        int64_t *o;
        size_t n;
        if (!wire_get_index_array(m, keys[k], &lim, &o, &n)) {
            wire_check_offsets(o, n, 10, keys[k]);
            free(o);
        }
        char **s;
        if (!wire_get_str_array(m, keys[k], &lim, &s, &n)) free(s);
        const char *str;
        int64_t i;
        double d;
        wire_get_str(m, keys[k], &str, &n);
        wire_get_int(m, keys[k], &i);
        wire_get_float(m, keys[k], &d);
    }
    RmProtoLimits pl = {.vocab_size = 1000, .max_seq_len = 512, .max_tokens = 1 << 16, .max_seqs = 256, .wire = lim};
    RmRequest r;
    const char *code;
    if (!rm_request_decode(m, NULL, CHAT_TEMPLATE_NONE, &pl, &r, &code)) {
        for (int i = 0; i < r.n_seqs; i++) (void)rm_request_len(&r, i);
        rm_request_free(&r);
    }
    wire_msg_free(m);
    return 0;
}
