/*
 * cmd_tls.c - pgmailctl tls rotate-ticket-keys [FILE]: a new session-ticket key file (the
 * format is in shared/tickets.h), run hourly by pgmail-tls-ticket-keys.timer.
 *
 * The new file holds a new random key as the current one and the old file's current key as
 * the previous one; the old previous key is dropped, so a key lives two rotation periods at
 * most. The file is replaced atomically (a new file in the same directory, written, synced
 * and renamed over the old one), so a handler that reads it at that moment sees the old keys
 * or the new ones, never a mix. It is created 0600, and when root rotates a file that
 * belongs to another user (the handlers' user outside systemd), it keeps that owner.
 * An old file that others could read is warned about and its keys are not carried over
 * (they may be known); one that is not a key file at all is left alone, and the command
 * fails: FILE may simply be a typo for some other file.
 */
#include "admin.h"
#include "fail.h"
#include "tickets.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/rand.h>

/* write_keys: the atomic replacement of path by the n keys in k (see the header). owner: the
 * old file's stat, or NULL. 0, or ADMIN_EXIT_FAIL once reported. */
static int write_keys(const char *path, const struct ticket_keys *k, const struct stat *owner)
{
    char tmp[PATH_MAX], dir[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= (int)sizeof tmp ||
        snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
        return admin_fail("%s: path too long", path);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return admin_fail("cannot create a file beside %s: %s", path, strerror(errno));
    size_t len = (size_t)k->n * TICKET_KEY_SIZE;
    /* Only when the owner changes: the timer's unit forbids chown (SystemCallFilter). */
    int keep =
        owner && geteuid() == 0 && (owner->st_uid != geteuid() || owner->st_gid != getegid());
    int ok = fchmod(fd, 0600) == 0 && (!keep || fchown(fd, owner->st_uid, owner->st_gid) == 0) &&
             write(fd, k->key, len) == (ssize_t)len && fsync(fd) == 0;
    int saved = errno;
    if (close(fd) != 0 && ok) {
        saved = errno;
        ok = 0;
    }
    if (!ok || rename(tmp, path) != 0) {
        if (ok)
            saved = errno;
        unlink(tmp);
        return admin_fail("cannot write %s: %s", path, strerror(saved));
    }
    /* The rename itself reaches the disk with the directory (for a file not on tmpfs). */
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

int admin_cmd_tls_rotate(struct admin_ctx *ctx, int argc, char **argv)
{
    const char *path = argc > 0 ? argv[0] : ctx->cfg.tls_ticket_keys;
    if (!path[0])
        return admin_fail("no FILE given and tls_ticket_keys is not set");
    static struct ticket_keys old, k;
    char why[600];
    struct stat st;
    const struct stat *owner = NULL;
    switch (tickets_read(path, &old, why, sizeof why)) {
    case TICKETS_OK:
        if (stat(path, &st) == 0)
            owner = &st;
        break;
    case TICKETS_MISSING:
        break;
    case TICKETS_UNSAFE:
        admin_fail("warning: %s; its keys are not kept", why);
        break;
    default:
        return admin_fail("%s; not replaced (remove it to start afresh)", why);
    }
    int rc = ADMIN_EXIT_FAIL;
    k.n = old.n > 0 ? 2 : 1;
    if (RAND_bytes(k.key[0], TICKET_KEY_SIZE) != 1) {
        admin_fail("no random bytes from OpenSSL");
    } else {
        if (old.n > 0)
            memcpy(k.key[1], old.key[0], TICKET_KEY_SIZE);
        if (write_keys(path, &k, owner) == 0) {
            printf("%s: a new current key, %s\n", path,
                   old.n > 0 ? "the previous current key kept as the previous one"
                             : "no previous key");
            rc = ADMIN_EXIT_OK;
        }
    }
    explicit_bzero(&old, sizeof old);
    explicit_bzero(&k, sizeof k);
    return rc;
}
