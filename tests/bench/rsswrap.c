/*
 * rsswrap.c - run a handler and record its peak resident set size (tests/bench/bench.py).
 *
 *   rsswrap LOGFILE PROGRAM [ARG...]
 *
 * Put between systemd-socket-activate and a handler only for the memory figures (never for
 * the rates: it adds a fork). The handler inherits fd 0/1/2 and the environment; when it
 * ends, one line "pid=N maxrss_kb=N minflt=N status=N" (from wait4's rusage) is appended
 * to LOGFILE. Exits with the handler's status.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: rsswrap LOGFILE PROGRAM [ARG...]\n");
        return 2;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("rsswrap: fork");
        return 1;
    }
    if (pid == 0) {
        execv(argv[2], argv + 2);
        perror("rsswrap: exec");
        _exit(127);
    }
    /* The handler owns the connection now; our copies must not keep it open. */
    close(0);
    close(1);
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &status, 0, &ru) < 0)
        ;
    char line[160];
    int n = snprintf(line, sizeof line, "pid=%d maxrss_kb=%ld minflt=%ld status=%d\n", (int)pid,
                     ru.ru_maxrss, ru.ru_minflt, status);
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd >= 0) {
        if (write(fd, line, (size_t)n) < 0)
            perror("rsswrap: write");
        close(fd);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
