/*
 * fuzz_milter.c - pgmail-smtpd's parser of what milters send (smtp/milter_proto.c) and the
 * header edits it applies (smtp/headers.c), on what a broken or hostile milter may send.
 * The input is a run of packets, each a 2-octet length and that many octets (command and
 * data). Checked: a custom reply is a 4xx/5xx SMTP reply (one code on every line, '-' on
 * all but the last, printable, CRLF between lines, within LIM_MILTER_REPLY); an edit that
 * is applied leaves a header section whose fields all start with a name and a colon, end
 * with CRLF, and have no line break that is not a fold, within the buffer's room; the
 * Authentication-Results filter and the milters' view of each value stay in bounds.
 */
#include "../../smtp/milter.h"
#include "fuzz.h"

#include <string.h>

static void check_reply(const struct milter_reply *r)
{
    const char *t = r->text;
    size_t n = strlen(t);
    fuzz_check(n >= 3 && n <= LIM_MILTER_REPLY);
    fuzz_check((t[0] == '4') == (r->temporary != 0) && (t[0] == '4' || t[0] == '5'));
    for (const char *line = t;;) {
        size_t len = strcspn(line, "\r\n");
        fuzz_check(len >= 3 && strncmp(line, t, 3) == 0);
        for (size_t i = 0; i < len; i++)
            fuzz_check(line[i] >= 0x20 && line[i] < 0x7f);
        if (line[len] == '\0') {
            fuzz_check(len == 3 || line[3] == ' ');
            break;
        }
        fuzz_check(line[3] == '-' && line[len] == '\r' && line[len + 1] == '\n');
        line += len + 2;
    }
}

static void check_section(const struct hdrs *h)
{
    fuzz_check(h->len <= h->cap);
    for (size_t i = 0; i < h->n; i++) {
        const char *p = h->buf + h->f[i].off;
        size_t len = h->f[i].len;
        fuzz_check(h->f[i].off + len <= h->len && len >= 3 && h->f[i].namelen > 0);
        fuzz_check(p[h->f[i].namelen] == ':');
        fuzz_check(p[len - 2] == '\r' && p[len - 1] == '\n');
        for (size_t j = 0; j + 2 < len; j++)
            if (p[j] == '\n')
                fuzz_check(p[j - 1] == '\r' && (p[j + 1] == ' ' || p[j + 1] == '\t'));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char client[] = "Received: from x\r\n\tby y;\r\n"
                                 "Subject: hello\r\n"
                                 "Authentication-Results: mx.example.test; dkim=pass\r\n";
    struct hdrs h;
    if (hdrs_init(&h, sizeof client + 4096) < 0)
        return 0;
    hdrs_append(&h, client, 26, 1);
    hdrs_append(&h, client + 26, 16, 1);
    hdrs_append(&h, client + 42, sizeof client - 43, 1);
    hdrs_drop_claims(&h, "MX.example.test");
    fuzz_check(h.n == 2);
    static char pkt[65536 + 1], value[8192];
    while (size >= 2) {
        size_t n = (size_t)data[0] << 8 | data[1];
        data += 2;
        size -= 2;
        if (n > size)
            n = size;
        memcpy(pkt, data, n);
        pkt[n] = '\0';
        data += n;
        size -= n;
        struct milter_reply r;
        if (milter_parse(pkt, n, &r) < 0)
            continue;
        int leadspc = r.index & 1;
        if (r.kind == MK_REPLY)
            check_reply(&r);
        else if (r.kind == MK_ADDHEADER)
            hdrs_add(&h, r.name, r.value, leadspc);
        else if (r.kind == MK_INSHEADER)
            hdrs_insert(&h, r.index, r.name, r.value, leadspc);
        else if (r.kind == MK_CHGHEADER)
            hdrs_change(&h, r.index, r.name, r.value, leadspc);
        check_section(&h);
        hdrs_drop_claims(&h, "mx.example.test");
        for (size_t i = 0; i < h.n; i++)
            fuzz_check(hdrs_value(&h, i, value, sizeof value, leadspc) < sizeof value);
    }
    fuzz_check(hdrs_size(&h) <= h.len);
    hdrs_free(&h);
    return 0;
}
