/*
 * fuzz_dsn.c - relay_dsn_compose (relay/dsn.c) with hostile text in every field a remote
 * server or a sender chooses: the remote's reply text and host name, the recipient, the
 * enhanced status, the original sender and the original header section. Input: data[0]
 * gives the number of recipients (1 to 4, bits 0-1) and which are delays (bits 2-5),
 * data[1] the reply code (0: none); the rest is NUL-separated fields: hostname, to, then
 * per recipient recipient, status, remote MTA, reply; what follows the last of them is the
 * header section (NULs included).
 * Checked (dsn.c's invariants): CRLF after every line and no other CR or LF, no NUL, no
 * line over 998 octets; the boundary line appears exactly three times and its closing
 * line once, last; every line of the header section and of the message/delivery-status
 * part begins with one of the fields dsn.c writes (or is a continuation or empty), so
 * hostile text can neither add a field nor end a part; one Final-Recipient per recipient.
 */
#include "../../relay/dsn.h"
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#define MAXR 4

static const char *const top_fields[] = {
    "From: ",           "To: ",           "Subject: ",      "Date: ", "Message-ID: ",
    "Auto-Submitted: ", "MIME-Version: ", "Content-Type: ", NULL};
static const char *const status_fields[] = {"Content-Description: ",
                                            "Content-Type: ",
                                            "Reporting-MTA: ",
                                            "Arrival-Date: ",
                                            "Final-Recipient: ",
                                            "Action: ",
                                            "Status: ",
                                            "Remote-MTA: ",
                                            "Diagnostic-Code: ",
                                            "Last-Attempt-Date: ",
                                            "Will-Retry-Until: ",
                                            NULL};

static int known(const char *l, size_t n, const char *const *fields)
{
    if (n == 0 || l[0] == ' ')
        return 1;
    for (size_t i = 0; fields[i]; i++)
        if (n >= strlen(fields[i]) && memcmp(l, fields[i], strlen(fields[i])) == 0)
            return 1;
    return 0;
}

/* next: the field at *p (up to a NUL or end), *p moved past it; "" when none is left. */
static const char *next(char **p, char *end)
{
    if (*p >= end)
        return "";
    char *s = *p;
    *p += strlen(s) + 1;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 60000)
        return 0;
    char *in = malloc(size - 2 + 1);
    if (!in)
        abort();
    memcpy(in, data + 2, size - 2);
    in[size - 2] = '\0';
    char *p = in, *end = in + size - 2;
    struct relay_dsn_rcpt rs[MAXR];
    struct relay_dsn d = {.message_id = 4242,
                          .arrival = 1764680000,
                          .retry_until = 1765100000,
                          .rcpts = rs,
                          .n = (size_t)(data[0] & 3) + 1};
    d.hostname = next(&p, end);
    d.to = next(&p, end);
    for (size_t i = 0; i < d.n; i++) {
        rs[i].recipient = next(&p, end);
        rs[i].status = next(&p, end);
        rs[i].remote_mta = next(&p, end);
        rs[i].reply = next(&p, end);
        rs[i].delayed = (data[0] >> (2 + i)) & 1;
        rs[i].code = data[1] ? 200 + data[1] * 2 : 0;
        rs[i].last_attempt = i % 2 ? 0 : 1764690000 + (long long)i;
    }
    d.headers = p < end ? p : "";
    d.headers_len = p < end ? (size_t)(end - p) : 0;
    size_t len = 0;
    char *out = relay_dsn_compose(&d, &len);
    fuzz_check(out != NULL);
    fuzz_check(!memchr(out, '\0', len));

    /* The boundary, from the second line of Content-Type: looked for with the field's name,
     * since a long hostile field folded earlier in the header may itself hold a continuation
     * line ' boundary="' (a finding of this target: a header a reader would never take for
     * Content-Type). */
    static const char ct[] = "\r\nContent-Type: multipart/report; report-type=delivery-status;"
                             "\r\n boundary=\"";
    const char *bq = strstr(out, ct);
    fuzz_check(bq != NULL);
    bq += strlen(ct);
    size_t blen = strcspn(bq, "\"");
    fuzz_check(blen > 0 && bq[blen] == '"');

    int section = 0; /* 0 header, 1 preamble, 2 text, 3 status, 4 headers, 5 after */
    size_t opens = 0, finals = 0, recipients = 0;
    for (size_t i = 0; i < len;) {
        const char *l = out + i;
        const char *lf = memchr(l, '\n', len - i);
        fuzz_check(lf != NULL && lf > l && lf[-1] == '\r');
        size_t n = (size_t)(lf - l) - 1;
        fuzz_check(n <= 998 && !memchr(l, '\r', n));
        int is_open = n == blen + 2 && l[0] == '-' && l[1] == '-' && !memcmp(l + 2, bq, blen);
        int is_final = n == blen + 4 && l[0] == '-' && l[1] == '-' && !memcmp(l + 2, bq, blen) &&
                       !memcmp(l + 2 + blen, "--", 2);
        fuzz_check(section != 5); /* nothing after the closing line */
        if (is_open) {
            opens++;
            section = 1 + (int)opens;
        } else if (is_final) {
            finals++;
            section = 5;
        } else if (section == 0 && n == 0) {
            section = 1;
        } else if (section == 0) {
            fuzz_check(known(l, n, top_fields));
        } else if (section == 3) {
            fuzz_check(known(l, n, status_fields));
            recipients += n >= 17 && memcmp(l, "Final-Recipient: ", 17) == 0;
        }
        i = (size_t)(lf - out) + 1;
    }
    fuzz_check(opens == 3 && finals == 1 && section == 5 && recipients == d.n);
    free(out);
    free(in);
    return 0;
}
