/*
 * fuzz_config.c - the configuration parser on arbitrary files: it loads or names the
 * problem, never crashes, and what it loads is within each key's bounds (the hostname a
 * domain name or an address literal).
 */
#include "fuzz.h"
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];

/* remove_path: the file is the fuzzer's own scratch; a run leaves nothing in /tmp. */
static void remove_path(void)
{
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/pgmail-fuzz-config-%d", (int)getpid());
        setenv("PGMAIL_CONFIG", path, 1);
        atexit(remove_path);
    }
    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    fwrite(data, 1, size, f);
    fclose(f);
    struct config cfg;
    char err[512];
    err[0] = '\0';
    if (config_load(&cfg, err, sizeof err) == 0) {
        fuzz_check(cfg.message_size_limit >= 1024 && cfg.max_recipients >= 1);
        fuzz_check(cfg.smtp_timeout >= 1 && cfg.pop3_timeout >= 1);
        fuzz_check(memchr(cfg.hostname, '\0', sizeof cfg.hostname));
        fuzz_check(config_hostname(cfg.hostname) == NULL);
    } else {
        fuzz_check(strncmp(err, path, strlen(path)) == 0);
    }
    return 0;
}
