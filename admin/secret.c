/*
 * secret.c - no-echo prompts and first-line reads of secrets from stdin (see secret.h).
 *
 * Input is read one byte at a time with read(2): nothing past the first line is consumed and
 * no copy of the secret is left in a stdio buffer. While echo is off, fatal signals first
 * restore the terminal, so that an interrupted prompt does not leave the shell silent.
 */
#include "secret.h"
#include "fail.h"
#include "auth.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

enum line { LINE_OK, LINE_EOF, LINE_TOOLONG, LINE_NUL, LINE_ERROR };

static const int fatal_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
#define NSIGNALS (sizeof fatal_signals / sizeof fatal_signals[0])

static struct termios saved_tty;

static void restore_and_die(int sig)
{
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tty);
    raise(sig); /* SA_RESETHAND made it fatal again; it is delivered once we return */
}

/* read_line: one line from stdin into buf (NUL-terminated, LF and a CR before it removed). */
static enum line read_line(char *buf, size_t len)
{
    size_t n = 0;
    for (;;) {
        char c;
        ssize_t r = read(STDIN_FILENO, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return LINE_ERROR;
        if (r == 0) {
            if (n == 0)
                return LINE_EOF;
            break; /* a last line without LF still counts */
        }
        if (c == '\n')
            break;
        if (c == '\0')
            return LINE_NUL;
        if (n + 1 >= len)
            return LINE_TOOLONG;
        buf[n++] = c;
    }
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    return LINE_OK;
}

/* prompt_line: print prompt on stderr and read a line from the terminal with echo off. */
static enum line prompt_line(const char *prompt, char *buf, size_t len)
{
    struct sigaction sa, old[NSIGNALS];
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = restore_and_die;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);

    fputs(prompt, stderr);
    fflush(stderr);
    if (tcgetattr(STDIN_FILENO, &saved_tty) != 0)
        return LINE_ERROR;
    struct termios quiet = saved_tty;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    quiet.c_lflag |= ECHONL;
    for (size_t i = 0; i < NSIGNALS; i++)
        sigaction(fatal_signals[i], &sa, &old[i]);
    enum line got = LINE_ERROR;
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0) {
        got = read_line(buf, len);
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tty);
    }
    for (size_t i = 0; i < NSIGNALS; i++)
        sigaction(fatal_signals[i], &old[i], NULL);
    if (got == LINE_EOF)
        fputc('\n', stderr);
    return got;
}

/* complain: report why line status got gave no secret (of at most max octets). */
static int complain(enum line got, const char *what, size_t max)
{
    switch (got) {
    case LINE_OK:
        return admin_fail("empty %s refused", what);
    case LINE_EOF:
        return admin_fail("no %s on standard input", what);
    case LINE_TOOLONG:
        return admin_fail("%s longer than %zu octets, the most crypt(3) takes for any scheme", what,
                          max);
    case LINE_NUL:
        return admin_fail("%s contains a NUL byte", what);
    case LINE_ERROR:
        break;
    }
    return admin_fail("cannot read the %s: %s", what, strerror(errno));
}

int admin_read_secret(const char *what, int confirm, char *buf, size_t len)
{
    int tty = isatty(STDIN_FILENO);
    char prompt[64], again[ADMIN_PASSWORD_MAX + 1];
    if (len > sizeof again)
        len = sizeof again;
    snprintf(prompt, sizeof prompt, "%c%s: ", toupper((unsigned char)what[0]), what + 1);
    enum line got = tty ? prompt_line(prompt, buf, len) : read_line(buf, len);
    int rc = 0;
    if (got != LINE_OK || buf[0] == '\0') {
        rc = complain(got, what, len - 1);
    } else if (tty && confirm) {
        snprintf(prompt, sizeof prompt, "Retype %s: ", what);
        got = prompt_line(prompt, again, len);
        if (got != LINE_OK)
            rc = complain(got, what, len - 1);
        else if (strcmp(buf, again) != 0)
            rc = admin_fail("the two %ss do not match", what);
        auth_wipe(again, sizeof again);
    }
    if (rc != 0) {
        auth_wipe(buf, len);
        return -1;
    }
    return 0;
}
