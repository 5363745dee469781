/*
 * dsn_drive.c - prints one DSN composed by relay/dsn.c, for tests/test_dsn.py, which builds
 * it and parses the output with Python's email package.
 *
 * Input on stdin, one record per line, fields separated by single spaces, text fields in
 * hex (so that a test can pass CR, LF and NUL in a remote reply):
 *   hostname to message_id arrival retry_until message
 *   recipient delayed status remote_mta code reply last_attempt   (one line per recipient)
 * message is the whole original message: the driver hands its header section
 * (relay_dsn_headers) to relay_dsn_compose, as the relay does. The DSN goes to stdout.
 */
#include "../relay/dsn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RCPTS 100

/* unhex: the next field of *p decoded in place (NUL-terminated, length in *n). */
static char *unhex(char **p, size_t *n)
{
    char *f = strsep(p, " \n");
    if (!f)
        exit(2);
    size_t k = 0;
    for (size_t i = 0; f[i] && f[i + 1]; i += 2) {
        unsigned v;
        if (sscanf(f + i, "%2x", &v) != 1)
            exit(2);
        f[k++] = (char)v;
    }
    f[k] = '\0';
    if (n)
        *n = k;
    return f;
}

static long long num(char **p)
{
    char *f = strsep(p, " \n");
    if (!f)
        exit(2);
    return strtoll(f, NULL, 10);
}

int main(void)
{
    static struct relay_dsn_rcpt r[MAX_RCPTS];
    struct relay_dsn d = {0};
    char *line = NULL;
    size_t cap = 0, mlen;
    if (getline(&line, &cap, stdin) < 0)
        return 2;
    char *p = line;
    d.hostname = unhex(&p, NULL);
    d.to = unhex(&p, NULL);
    d.message_id = num(&p);
    d.arrival = num(&p);
    d.retry_until = num(&p);
    d.headers = unhex(&p, &mlen);
    d.headers_len = relay_dsn_headers(d.headers, mlen);
    for (;;) {
        char *l = NULL;
        size_t lcap = 0;
        if (getline(&l, &lcap, stdin) < 0 || d.n == MAX_RCPTS) {
            free(l);
            break;
        }
        p = l; /* kept for the program's life: r[] points into it */
        struct relay_dsn_rcpt *x = &r[d.n++];
        x->recipient = unhex(&p, NULL);
        x->delayed = (int)num(&p);
        x->status = unhex(&p, NULL);
        x->remote_mta = unhex(&p, NULL);
        x->code = (int)num(&p);
        x->reply = unhex(&p, NULL);
        x->last_attempt = num(&p);
    }
    d.rcpts = r;
    size_t len;
    char *dsn = relay_dsn_compose(&d, &len);
    if (!dsn || fwrite(dsn, 1, len, stdout) != len)
        return 1;
    free(dsn);
    return 0;
}
