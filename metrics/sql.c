/*
 * sql.c - every statement of pgmail-metrics; the views are migrations/010's.
 */
#include "metrics.h"

static const char *const statements[] = {
    [METRICS_SQL_ALL] = "SELECT metric, label, value FROM pgmail_metrics",
    [METRICS_SQL_USERS] = "SELECT 'user_messages', address, messages::double precision"
                          " FROM pgmail_metrics_mailboxes"
                          " UNION ALL SELECT 'user_bytes', address, bytes::double precision"
                          " FROM pgmail_metrics_mailboxes",
};

const char *metrics_sql(enum metrics_sql_id id)
{
    return statements[id];
}
