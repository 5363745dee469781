/*
 * test_accounts.c - the transaction's account set (smtp/accounts.c): each account once, in
 * the order first named, however many recipients and alias targets name it.
 */
#include "check.h"
#include "../../smtp/smtpd.h"

#include <stdlib.h>

void test_accounts(void)
{
    struct smtp_tx tx = {0};
    /* 1000 recipients, each an alias of three targets out of 50 accounts that overlap
     * from one recipient to the next, and every 10th naming a new account as well. */
    long long want = 0;
    for (long long r = 0; r < 1000; r++) {
        long long targets[4] = {1000 + r % 50, 1000 + (r + 1) % 50, 1000 + (r * 7) % 50,
                                r % 10 == 0 ? 5000 + r : 1000};
        CHECK(smtp_accounts_reserve(&tx, 4) == 0);
        for (int k = 0; k < 4; k++)
            smtp_accounts_add(&tx, targets[k]);
        if (r % 10 == 0)
            want++;
    }
    want += 50;
    CHECK((long long)tx.naccounts == want);
    /* in the order first named, no repeats */
    CHECK(tx.accounts[0] == 1000 && tx.accounts[1] == 1001 && tx.accounts[2] == 5000);
    int repeats = 0;
    for (size_t i = 0; i < tx.naccounts; i++)
        for (size_t j = 0; j < i; j++)
            repeats += tx.accounts[i] == tx.accounts[j];
    CHECK(repeats == 0);
    /* ids far apart, negative and huge ones are kept distinct too */
    long long odd[] = {-1, 0, 9223372036854775807LL, -9223372036854775807LL - 1, 1LL << 32};
    for (int k = 0; k < 5; k++) {
        CHECK(smtp_accounts_reserve(&tx, 1) == 0);
        smtp_accounts_add(&tx, odd[k]);
        smtp_accounts_add(&tx, odd[k]);
    }
    CHECK((long long)tx.naccounts == want + 5);
    /* reserving for nothing new changes nothing */
    size_t cap = tx.account_cap;
    CHECK(smtp_accounts_reserve(&tx, 0) == 0 && tx.account_cap == cap);
    free(tx.accounts);
}
