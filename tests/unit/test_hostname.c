/*
 * test_hostname.c - config_hostname, the check that keeps anything but a domain name or an
 * address literal out of the greeting, Received:, Message-ID and MAILER-DAEMON@..., and
 * config_load refusing a bad hostname from the file or the environment, naming file, line
 * and key.
 */
#include "check.h"
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void test_hostname(void)
{
    static const char *const good[] = {
        "mx.example.org",
        "localhost",
        "a",
        "1.example",
        "xn--bcher-kva.example",
        "a-b.c-d",
        "MX.Example.ORG",
        "123",
        "[192.0.2.1]",
        "[IPv6:2001:db8::1]",
        "[ipv6:::1]",
        "[IPv6:::ffff:192.0.2.1]",
    };
    static const char *const bad[] = {
        "",         "a b",         "a>b",           "a<b",        "mx.example.org.",
        ".example", "a..b",        "-a.example",    "a-.example", "under_score.example",
        "a@b",      "[192.0.2.1",  "[192.0.2.256]", "[1.2.3]",    "[IPv6:2001:db8::g]",
        "[]",       "[IPv7:1::2]", "[2001:db8::1]", "a:25",       "é.example",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        CHECK(config_hostname(good[i]) == NULL);
        if (config_hostname(good[i]))
            fprintf(stderr, "  refused: '%s'\n", good[i]);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(config_hostname(bad[i]) != NULL);
        if (!config_hostname(bad[i]))
            fprintf(stderr, "  accepted: '%s'\n", bad[i]);
    }
    /* Labels of 63 octets pass, of 64 not; 255 octets in all pass, 256 not. */
    char name[300];
    memset(name, 'a', 64);
    name[64] = '\0';
    CHECK(config_hostname(name) != NULL);
    name[63] = '\0';
    CHECK(config_hostname(name) == NULL);
    memset(name, 'a', 255);
    for (size_t i = 63; i < 255; i += 64)
        name[i] = '.';
    name[255] = '\0';
    CHECK(config_hostname(name) == NULL);
    name[255] = 'a';
    name[256] = '\0';
    CHECK(config_hostname(name) != NULL);

    char path[] = "/tmp/pgmail-unit-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("# our name\nhostname = a>b\n", f);
    fclose(f);
    setenv("PGMAIL_CONFIG", path, 1);
    struct config cfg;
    char err[512] = "";
    CHECK(config_load(&cfg, err, sizeof err) == -1);
    CHECK(strstr(err, path) && strstr(err, ":2:") && strstr(err, "'hostname'"));
    f = fopen(path, "w");
    fputs("hostname = mx.example.org\n", f);
    fclose(f);
    CHECK(config_load(&cfg, err, sizeof err) == 0 && strcmp(cfg.hostname, "mx.example.org") == 0);
    setenv("PGMAIL_HOSTNAME", "", 1);
    CHECK(config_load(&cfg, err, sizeof err) == -1 && strstr(err, "PGMAIL_HOSTNAME") &&
          strstr(err, "'hostname'"));
    setenv("PGMAIL_HOSTNAME", "[IPv6:2001:db8::25]", 1);
    CHECK(config_load(&cfg, err, sizeof err) == 0);
    unsetenv("PGMAIL_HOSTNAME");
    unlink(path);
    unsetenv("PGMAIL_CONFIG");
}
