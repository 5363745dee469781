/*
 * unit.c - runs every unit test of the parsers and prints one PASS/FAIL line per test and
 * a closing "N passed, N failed".
 */
#include "check.h"

int check_failures;

static const struct {
    const char *name;
    void (*fn)(void);
} tests[] = {
    {"io", test_io},           {"base64", test_base64},
    {"address", test_address}, {"config", test_config},
    {"db", test_db},           {"accounts", test_accounts},
    {"log", test_log},         {"hostname", test_hostname},
    {"dsn", test_dsn},
};

int main(void)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int before = check_failures;
        tests[i].fn();
        if (check_failures == before) {
            printf("PASS unit/%s\n", tests[i].name);
            passed++;
        } else {
            printf("FAIL unit/%s\n", tests[i].name);
            failed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
