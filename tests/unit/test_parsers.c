/*
 * test_parsers.c - base64, SMTP paths and parameters, lookup keys, configuration errors and
 * SQLSTATE classes.
 */
#include "check.h"
#include "base64.h"
#include "config.h"
#include "db.h"
#include "../../smtp/smtpd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void test_base64(void)
{
    unsigned char out[64];
    char enc[64];
    CHECK(base64_decode("AGFsaWNlAHNlY3JldA==", 20, out) == 13);
    CHECK(memcmp(out, "\0alice\0secret", 13) == 0);
    CHECK(base64_decode("Zm9v", 4, out) == 3 && strcmp((char *)out, "foo") == 0);
    CHECK(base64_decode("Zm8=", 4, out) == 2 && strcmp((char *)out, "fo") == 0);
    CHECK(base64_decode("Zm9", 3, out) == -1);
    CHECK(base64_decode("Zm9=", 4, out) == -1); /* non-zero pad bits (found by fuzz_base64) */
    CHECK(base64_decode("Jl==", 4, out) == -1);
    CHECK(base64_decode("Z=9v", 4, out) == -1);
    CHECK(base64_decode("Zm9v Zm9v", 9, out) == -1);
    CHECK(base64_decode("", 0, out) == 0);
    CHECK(base64_encode((const unsigned char *)"fo", 2, enc) == 4 && strcmp(enc, "Zm8=") == 0);
    for (size_t n = 0; n < 20; n++) { /* round trip of every length and byte value */
        unsigned char in[20];
        for (size_t i = 0; i < n; i++)
            in[i] = (unsigned char)(i * 37 + n);
        base64_encode(in, n, enc);
        CHECK(base64_decode(enc, strlen(enc), out) == (long)n && memcmp(in, out, n) == 0);
    }
}

static int path(const char *in, int null_ok, const char *want, const char *want_params)
{
    char buf[600], out[LIM_PATH + 1], *params = NULL;
    snprintf(buf, sizeof buf, "%s", in);
    int rc = smtp_parse_path(buf, null_ok, out, sizeof out, &params);
    if (!want)
        return rc == -1;
    return rc == 0 && strcmp(out, want) == 0 && strcmp(params, want_params) == 0;
}

void test_address(void)
{
    CHECK(path("<alice@example.test>", 0, "alice@example.test", ""));
    CHECK(path(" <alice@example.test> SIZE=10", 0, "alice@example.test", "SIZE=10"));
    CHECK(path("<>", 1, "", ""));
    CHECK(path("<>", 0, NULL, NULL));
    CHECK(path("<@relay.test,@b.test:bob@example.test>", 0, "bob@example.test", ""));
    CHECK(path("<\"odd@name\"@example.test>", 0, "\"odd@name\"@example.test", ""));
    CHECK(path("<\"alice+tag\"@example.test>", 0, "\"alice+tag\"@example.test", ""));
    CHECK(path("<\"alice smith\"@example.test>", 0, "\"alice smith\"@example.test", ""));
    CHECK(path("<\"a\\\"b\"@example.test>", 0, "\"a\\\"b\"@example.test", ""));
    CHECK(path("<\"a\"b\"@example.test>", 0, NULL, NULL)); /* bare quote inside */
    CHECK(path("<user@[192.0.2.1]>", 0, "user@[192.0.2.1]", ""));
    CHECK(path("alice@example.test", 0, NULL, NULL));
    CHECK(path("<alice@example.test", 0, NULL, NULL));
    CHECK(path("<alice>", 0, NULL, NULL));
    CHECK(path("<a..b@example.test>", 0, NULL, NULL));
    CHECK(path("<.a@example.test>", 0, NULL, NULL));
    CHECK(path("<a@-example.test>", 0, NULL, NULL));
    CHECK(path("<a@exa mple.test>", 0, NULL, NULL));
    CHECK(path("<a@example.test>junk", 0, NULL, NULL));
    CHECK(path("<a b@example.test>", 0, NULL, NULL));
    char lp[80], addr[120];
    memset(lp, 'x', 65);
    lp[65] = '\0';
    snprintf(addr, sizeof addr, "<%s@example.test>", lp);
    CHECK(path(addr, 0, NULL, NULL)); /* local part over 64 octets */
    lp[64] = '\0';
    snprintf(addr, sizeof addr, "<%s@example.test>", lp);
    CHECK(!path(addr, 0, NULL, NULL));

    char params[] = "SIZE=100 BODY=8BITMIME AUTH=<>", *k, *v, *p = params;
    CHECK(smtp_param_next(&p, &k, &v) && !strcmp(k, "SIZE") && !strcmp(v, "100"));
    CHECK(smtp_param_next(&p, &k, &v) && !strcmp(k, "BODY") && !strcmp(v, "8BITMIME"));
    CHECK(smtp_param_next(&p, &k, &v) && !strcmp(k, "AUTH") && !strcmp(v, "<>"));
    CHECK(!smtp_param_next(&p, &k, &v));

    static struct smtp_session s;
    strcpy(s.cfg.recipient_delimiter, "+");
    char key[LIM_PATH + 1];
    const char *dom;
    smtp_lookup_key(&s, "Alice+Tag@Example.TEST", 1, key, sizeof key, &dom);
    CHECK(strcmp(key, "alice@example.test") == 0 && strcmp(dom, "example.test") == 0);
    smtp_lookup_key(&s, "Alice+Tag@Example.TEST", 0, key, sizeof key, &dom);
    CHECK(strcmp(key, "alice+tag@example.test") == 0);
    smtp_lookup_key(&s, "+x@example.test", 1, key, sizeof key, &dom);
    CHECK(strcmp(key, "+x@example.test") == 0); /* nothing before the delimiter: kept */
    /* RFC 5321 4.1.2: a quoted local part is the same mailbox as its unquoted form, and the
     * delimiter is found in that form (issue 12: "alice+tag" became "alice). */
    smtp_lookup_key(&s, "\"Alice+Tag\"@Example.TEST", 1, key, sizeof key, &dom);
    CHECK(strcmp(key, "alice@example.test") == 0 && strcmp(dom, "example.test") == 0);
    smtp_lookup_key(&s, "\"Alice+Tag\"@Example.TEST", 0, key, sizeof key, &dom);
    CHECK(strcmp(key, "alice+tag@example.test") == 0);
    smtp_lookup_key(&s, "\"alice\"@example.test", 1, key, sizeof key, &dom);
    CHECK(strcmp(key, "alice@example.test") == 0);
    smtp_lookup_key(&s, "\"al\\ice+x\"@example.test", 1, key, sizeof key, &dom);
    CHECK(strcmp(key, "alice@example.test") == 0); /* an escape is its character */
    smtp_lookup_key(&s, "\"alice smith+x\"@example.test", 1, key, sizeof key, &dom);
    CHECK(strcmp(key, "alice smith@example.test") == 0); /* needs quoting: no such account */
    smtp_lookup_key(&s, "\"+x\"@example.test", 1, key, sizeof key, &dom);
    CHECK(strcmp(key, "+x@example.test") == 0);
    smtp_lookup_key(&s, "\"odd@name+x\"@example.test", 1, key, sizeof key, &dom);
    CHECK(strcmp(key, "odd@name@example.test") == 0 && strcmp(dom, "example.test") == 0);
    smtp_lookup_key(&s, "\"\"@example.test", 1, key, sizeof key, &dom);
    CHECK(strcmp(key, "@example.test") == 0);
    s.cfg.recipient_delimiter[0] = '\0';
    smtp_lookup_key(&s, "a+b@example.test", 1, key, sizeof key, &dom);
    CHECK(strcmp(key, "a+b@example.test") == 0);
}

void test_config(void)
{
    char path[] = "/tmp/pgmail-unit-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("# comment\nmessage_size_limit = 2048\nbare_newline = reject\nbogus_key = 1\n", f);
    fclose(f);
    setenv("PGMAIL_CONFIG", path, 1);
    struct config cfg;
    char err[256] = "";
    CHECK(config_load(&cfg, err, sizeof err) == -1);
    CHECK(strstr(err, path) && strstr(err, ":4:") && strstr(err, "bogus_key"));

    f = fopen(path, "w");
    fputs("message_size_limit = 2048\nbare_newline = reject\nallow_plaintext_auth=yes\n", f);
    fclose(f);
    setenv("PGMAIL_MAX_RECIPIENTS", "7", 1);
    setenv("PGMAIL_MESSAGE_SIZE_LIMIT", "4096", 1); /* the environment wins */
    CHECK(config_load(&cfg, err, sizeof err) == 0);
    CHECK(cfg.message_size_limit == 4096 && cfg.max_recipients == 7);
    CHECK(cfg.bare_newline == BARE_REJECT && cfg.allow_plaintext_auth == 1);
    CHECK(cfg.smtp_timeout == 300 && strcmp(cfg.recipient_delimiter, "+") == 0);

    setenv("PGMAIL_MAX_RECIPIENTS", "lots", 1);
    CHECK(config_load(&cfg, err, sizeof err) == -1 && strstr(err, "max_recipients"));
    unsetenv("PGMAIL_MAX_RECIPIENTS");
    unsetenv("PGMAIL_MESSAGE_SIZE_LIMIT");

    f = fopen(path, "w");
    fputs("smtp_timeout = 0\n", f);
    fclose(f);
    CHECK(config_load(&cfg, err, sizeof err) == -1 && strstr(err, ":1:") &&
          strstr(err, "smtp_timeout"));
    unlink(path);
    setenv("PGMAIL_CONFIG", "/nonexistent/pgmail.conf", 1);
    CHECK(config_load(&cfg, err, sizeof err) == -1 && strstr(err, "/nonexistent"));
    unsetenv("PGMAIL_CONFIG");
}

void test_db(void)
{
    CHECK(db_classify("08006") == DB_TEMP); /* connection failure */
    CHECK(db_classify("40001") == DB_TEMP); /* serialization */
    CHECK(db_classify("53300") == DB_TEMP); /* too many connections */
    CHECK(db_classify("57P01") == DB_TEMP); /* admin shutdown */
    CHECK(db_classify("42P01") == DB_TEMP); /* undefined table: not migrated yet */
    CHECK(db_classify("XX000") == DB_TEMP);
    CHECK(db_classify(NULL) == DB_TEMP);
    CHECK(db_classify("23505") == DB_PERM); /* unique violation */
    CHECK(db_classify("22001") == DB_PERM); /* string too long */
}
