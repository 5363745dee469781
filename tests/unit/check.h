/*
 * check.h - the smallest unit-test kit: CHECK(cond) records a failure with its line, and
 * each test function is run by main() in unit.c, which prints "N passed, N failed".
 */
#ifndef PGMAIL_CHECK_H
#define PGMAIL_CHECK_H

#include <stdio.h>

extern int check_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);             \
            check_failures++;                                                                      \
        }                                                                                          \
    } while (0)

void test_io(void);
void test_base64(void);
void test_address(void);
void test_config(void);
void test_db(void);
void test_accounts(void);
void test_log(void);
void test_hostname(void);
void test_dsn(void);

#endif
