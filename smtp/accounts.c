/*
 * accounts.c - the set of local accounts a transaction delivers to.
 *
 * Every RCPT adds the accounts its address resolves to (an alias may name several, and
 * several recipients may share them). The set keeps each account once, in the order first
 * named, so that DATA hands the database a list without repeats and nothing is ever
 * deduplicated again: an open-addressing hash index over the list makes each addition
 * O(1) on average, whatever the number of recipients and alias targets.
 *
 * Memory belongs to the transaction: one block holds the list (cap ids) and the index
 * (2 * cap slots, each 0 for empty or a list position + 1), freed by smtp_tx_reset.
 */
#include "smtpd.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* slots: the index, after the list in the same block. */
static size_t *slots(const struct smtp_tx *tx)
{
    return (size_t *)(void *)(tx->accounts + tx->account_cap);
}

/* find: the slot where id is, or the empty slot where it would go. nslots is a power of
 * two and never more than half full, so the probe ends. */
static size_t find(const long long *ids, const size_t *slot, size_t nslots, long long id)
{
    /* Fibonacci hashing: account ids are sequential, and this spreads them. */
    size_t i = (size_t)(((uint64_t)id * 0x9E3779B97F4A7C15u) >> 32) & (nslots - 1);
    while (slot[i] && ids[slot[i] - 1] != id)
        i = (i + 1) & (nslots - 1);
    return i;
}

/* regrow: a block for cap accounts (list and index), the list re-indexed. -1 when out of
 * memory (the set is unchanged then). */
static int regrow(struct smtp_tx *tx, size_t cap)
{
    if (cap > SIZE_MAX / 4 / (sizeof(long long) + 2 * sizeof(size_t)))
        return -1;
    long long *block = malloc(cap * (sizeof(long long) + 2 * sizeof(size_t)));
    if (!block)
        return -1;
    if (tx->naccounts)
        memcpy(block, tx->accounts, tx->naccounts * sizeof *block);
    size_t *slot = (size_t *)(void *)(block + cap);
    memset(slot, 0, 2 * cap * sizeof *slot);
    for (size_t k = 0; k < tx->naccounts; k++)
        slot[find(block, slot, 2 * cap, block[k])] = k + 1;
    free(tx->accounts);
    tx->accounts = block;
    tx->account_cap = cap;
    return 0;
}

int smtp_accounts_reserve(struct smtp_tx *tx, size_t more)
{
    if (more <= tx->account_cap - tx->naccounts)
        return 0;
    size_t cap = tx->account_cap ? tx->account_cap : 8;
    while (cap - tx->naccounts < more) {
        if (cap > SIZE_MAX / 4)
            return -1;
        cap *= 2;
    }
    return regrow(tx, cap);
}

void smtp_accounts_add(struct smtp_tx *tx, long long id)
{
    size_t *slot = slots(tx), i = find(tx->accounts, slot, 2 * tx->account_cap, id);
    if (slot[i])
        return; /* named already (an alias and its account, or two aliases) */
    tx->accounts[tx->naccounts++] = id;
    slot[i] = tx->naccounts;
}
