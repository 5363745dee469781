/*
 * pop3load.c - a small POP3 load generator for pgmail's benchmark (tests/bench/bench.py).
 *
 *   pop3load -p PORT -c CONCURRENCY (-n SESSIONS | -t SECONDS) -u USERFILE
 *            [-s SCRIPT] [-H HOST] [-q]
 *
 * Each of CONCURRENCY worker processes opens sessions one after the other: connect, read
 * the greeting, USER/PASS, the commands of SCRIPT, QUIT; each reply is awaited before the
 * next command is sent, as a mail client does (no pipelining). Worker i logs in as line
 * (i mod lines) of USERFILE ("user password" per line), so parallel sessions never
 * contend for one mailbox lock.
 * SCRIPT is a comma-separated list of commands sent after login (default "STAT,RETR 1");
 * LIST, UIDL (without argument), RETR, TOP and CAPA read a multi-line answer to its final
 * ".". "SLEEP ms" pauses (to let a sampler read a server's peak memory before QUIT). The
 * script "greet" only reads the greeting and sends QUIT (no login): a spawn floor.
 * With -n the sessions are shared out among the workers; with -t every worker starts new
 * sessions until the time is up.
 *
 * Prints one line:
 *   sessions=N errors=N elapsed=S rate=R median_ms=M p90_ms=M bytes=N
 * rate is completed sessions per second of wall time from the common start to the end of
 * the last session; median/p90 are per-session times. Exit status 0 when no session
 * failed, 1 otherwise (a -ERR answer or a broken connection is a failed session; the first
 * few are described on stderr).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 200000
#define MAX_USERS   1024
#define MAX_CMDS    32
#define MAX_WORKERS 1024

struct shared {
    long sessions, errors, bytes, nsamples, printed;
    double start;            /* the common start (CLOCK_MONOTONIC seconds), set by the parent */
    double end[MAX_WORKERS]; /* each worker's last session end, seconds since start */
    float samples[MAX_SAMPLES];
};

static struct shared *sh;
static const char *host = "127.0.0.1";
static int port;
static char *users[MAX_USERS], *passwords[MAX_USERS];
static int nusers;
static char *cmds[MAX_CMDS];
static int ncmds, greet_only;
static double t0;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A buffered reader on the session socket. */
struct conn {
    int fd;
    char buf[65536];
    size_t pos, len;
    long bytes;
};

/* readline: one line (CRLF or LF ended) into line; returns its length, -1 on EOF/error.
 * Lines longer than cap are cut (the rest is read and dropped). */
static long readline(struct conn *c, char *line, size_t cap)
{
    size_t n = 0;
    for (;;) {
        if (c->pos == c->len) {
            ssize_t r;
            do
                r = read(c->fd, c->buf, sizeof c->buf);
            while (r < 0 && errno == EINTR);
            if (r <= 0)
                return -1;
            c->pos = 0;
            c->len = (size_t)r;
            c->bytes += r;
        }
        char *start = c->buf + c->pos;
        char *nl = memchr(start, '\n', c->len - c->pos);
        size_t take = nl ? (size_t)(nl - start) + 1 : c->len - c->pos;
        if (n + 1 < cap) {
            size_t room = cap - 1 - n;
            memcpy(line + n, start, take < room ? take : room);
            n += take < room ? take : room;
        }
        c->pos += take;
        if (nl) {
            line[n] = '\0';
            return (long)n;
        }
    }
}

static int sendline(struct conn *c, const char *s)
{
    char out[600];
    int n = snprintf(out, sizeof out, "%s\r\n", s);
    if (n < 0 || (size_t)n >= sizeof out)
        return -1;
    for (int off = 0; off < n;) {
        ssize_t w = write(c->fd, out + off, (size_t)(n - off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        off += (int)w;
    }
    return 0;
}

static void complain(const char *what, const char *detail)
{
    if (__atomic_fetch_add(&sh->printed, 1, __ATOMIC_RELAXED) < 5)
        fprintf(stderr, "pop3load: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
}

/* reply: read one status line; with multi, also the lines up to the final ".". 0 on +OK. */
static int reply(struct conn *c, int multi, const char *cmd)
{
    char line[1024];
    if (readline(c, line, sizeof line) < 0) {
        complain("connection closed after", cmd);
        return -1;
    }
    if (strncmp(line, "+OK", 3) != 0) {
        line[strcspn(line, "\r\n")] = '\0';
        char msg[1200];
        snprintf(msg, sizeof msg, "%s -> %s", cmd, line);
        complain("error reply", msg);
        return -1;
    }
    while (multi) {
        long n = readline(c, line, sizeof line);
        if (n < 0) {
            complain("connection closed in the multi-line answer to", cmd);
            return -1;
        }
        if ((n == 3 && strcmp(line, ".\r\n") == 0) || (n == 2 && strcmp(line, ".\n") == 0))
            break;
    }
    return 0;
}

static int is_multi(const char *cmd)
{
    if (strncasecmp(cmd, "RETR", 4) == 0 || strncasecmp(cmd, "TOP", 3) == 0 ||
        strcasecmp(cmd, "CAPA") == 0)
        return 1;
    /* LIST and UIDL without an argument list the mailbox. */
    return strcasecmp(cmd, "LIST") == 0 || strcasecmp(cmd, "UIDL") == 0;
}

static int session(int worker)
{
    struct conn *c = &(struct conn){0};
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int one = 1, rc = -1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        complain("connect", strerror(errno));
        goto out;
    }
    if (reply(c, 0, "greeting") < 0)
        goto out;
    if (!greet_only) {
        char cmd[600];
        int u = worker % nusers;
        snprintf(cmd, sizeof cmd, "USER %s", users[u]);
        if (sendline(c, cmd) < 0 || reply(c, 0, "USER") < 0)
            goto out;
        snprintf(cmd, sizeof cmd, "PASS %s", passwords[u]);
        if (sendline(c, cmd) < 0 || reply(c, 0, "PASS") < 0)
            goto out;
        for (int i = 0; i < ncmds; i++) {
            if (strncasecmp(cmds[i], "SLEEP ", 6) == 0) {
                long ms = atol(cmds[i] + 6);
                struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
                nanosleep(&ts, NULL);
                continue;
            }
            if (sendline(c, cmds[i]) < 0 || reply(c, is_multi(cmds[i]), cmds[i]) < 0)
                goto out;
        }
    }
    if (sendline(c, "QUIT") < 0 || reply(c, 0, "QUIT") < 0)
        goto out;
    rc = 0;
out:
    __atomic_fetch_add(&sh->bytes, c->bytes, __ATOMIC_RELAXED);
    close(c->fd);
    return rc;
}

static void worker(int id, long count, double deadline)
{
    for (long i = 0; count < 0 ? now() < deadline : i < count; i++) {
        double a = now();
        int rc = session(id);
        double b = now();
        if (rc == 0) {
            __atomic_fetch_add(&sh->sessions, 1, __ATOMIC_RELAXED);
            long k = __atomic_fetch_add(&sh->nsamples, 1, __ATOMIC_RELAXED);
            if (k < MAX_SAMPLES)
                sh->samples[k] = (float)((b - a) * 1000.0);
        } else {
            __atomic_fetch_add(&sh->errors, 1, __ATOMIC_RELAXED);
            if (count < 0) { /* do not spin on a server that refuses */
                struct timespec ts = {0, 10000000L};
                nanosleep(&ts, NULL);
            }
        }
        sh->end[id] = b - t0; /* only this worker writes its slot */
    }
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void load_users(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(2);
    }
    char line[1024];
    while (nusers < MAX_USERS && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *sp = strchr(line, ' ');
        if (!sp)
            continue;
        *sp = '\0';
        users[nusers] = strdup(line);
        passwords[nusers] = strdup(sp + 1);
        nusers++;
    }
    fclose(f);
    if (nusers == 0) {
        fprintf(stderr, "pop3load: no \"user password\" line in %s\n", path);
        exit(2);
    }
}

static int usage(void)
{
    fprintf(stderr, "usage: pop3load -p PORT -c CONCURRENCY (-n SESSIONS | -t SECONDS) "
                    "-u USERFILE [-s SCRIPT] [-H HOST]\n");
    return 2;
}

int main(int argc, char **argv)
{
    int conc = 1, opt;
    long total = -1;
    double seconds = -1;
    const char *userfile = NULL;
    char *script = strdup("STAT,RETR 1");
    while ((opt = getopt(argc, argv, "H:p:c:n:t:u:s:")) != -1) {
        switch (opt) {
        case 'H':
            host = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'c':
            conc = atoi(optarg);
            break;
        case 'n':
            total = atol(optarg);
            break;
        case 't':
            seconds = atof(optarg);
            break;
        case 'u':
            userfile = optarg;
            break;
        case 's':
            script = strdup(optarg);
            break;
        default:
            return usage();
        }
    }
    if (port <= 0 || conc <= 0 || conc > MAX_WORKERS || (total < 0) == (seconds < 0))
        return usage();
    if (strcmp(script, "greet") == 0) {
        greet_only = 1;
    } else {
        if (!userfile)
            return usage();
        load_users(userfile);
        for (char *save = NULL, *p = strtok_r(script, ",", &save); p && ncmds < MAX_CMDS;
             p = strtok_r(NULL, ",", &save))
            if (*p)
                cmds[ncmds++] = p;
    }
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int go[2];
    if (pipe(go) < 0) {
        perror("pipe");
        return 2;
    }
    for (int i = 0; i < conc; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 2;
        }
        if (pid == 0) {
            close(go[1]);
            char b;
            if (read(go[0], &b, 1) < 0) /* wait for the common start (EOF) */
                _exit(2);
            t0 = sh->start;
            long count = total < 0 ? -1 : total / conc + (i < total % conc);
            worker(i, count, t0 + seconds);
            _exit(0);
        }
    }
    close(go[0]);
    t0 = now();
    sh->start = t0;
    close(go[1]); /* every worker starts now */
    while (wait(NULL) > 0)
        ;
    double elapsed = 0;
    for (int i = 0; i < conc; i++)
        if (sh->end[i] > elapsed)
            elapsed = sh->end[i];
    long n = sh->nsamples < MAX_SAMPLES ? sh->nsamples : MAX_SAMPLES;
    qsort(sh->samples, (size_t)n, sizeof sh->samples[0], cmp_float);
    double med = n ? sh->samples[n / 2] : 0, p90 = n ? sh->samples[(n * 9) / 10] : 0;
    printf("sessions=%ld errors=%ld elapsed=%.4f rate=%.3f median_ms=%.3f p90_ms=%.3f bytes=%ld\n",
           sh->sessions, sh->errors, elapsed, elapsed > 0 ? (double)sh->sessions / elapsed : 0.0,
           med, p90, sh->bytes);
    return sh->errors ? 1 : 0;
}
