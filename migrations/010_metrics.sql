-- 010_metrics.sql - counters that never go down, and the views pgmail-metrics and
-- pgmailctl stats read.
--
-- Why a counter table: rows of messages, mailbox and queue are deleted (POP3 DELE, queue
-- pruning, pgmailctl), so counting them is no counter. Each event adds to pgmail_counters
-- in the same transaction as the event itself (triggers below), so a counter is exactly as
-- durable as what it counts and survives restarts of every program and of PostgreSQL.
--
-- Why shards: one row per counter, updated by every delivery, would serialize all
-- concurrent commits on its row lock. Each backend adds to the shard pg_backend_pid() % 64
-- of a counter instead, and the view sums the shards. Two sessions wait on each other only
-- when their backends share a shard and both touch the same counter at once. Every
-- trigger adds its rows in (name, label) order, so two writers never lock them crosswise.
--
-- Failed logins are recorded nowhere else: shared/auth.c calls pgmail_count_login_failure
-- once per failed login (one statement), outside any transaction of the session.
--
-- Existing installations: the counters start from what the tables still hold (shard 0):
-- received mail from the mailbox rows (mail already deleted by POP3 cannot be counted),
-- outbound outcomes from queue_attempts and the local bounce rows kept as history; failed
-- logins from 0. From here on they only grow.

SET LOCAL lock_timeout = '10s';

CREATE TABLE pgmail_counters (
    name  text NOT NULL,
    label text NOT NULL DEFAULT '',   -- the one label value ('' when the counter has none)
    shard smallint NOT NULL,
    value bigint NOT NULL DEFAULT 0 CHECK (value >= 0),
    PRIMARY KEY (name, label, shard)
);

-- The shard of this backend (0..63).
CREATE FUNCTION pgmail_counter_shard() RETURNS smallint
LANGUAGE sql STABLE AS $$ SELECT (pg_backend_pid() % 64)::smallint $$;

-- pgmail_count_add: add p_values[i] to counter p_names[i] with label p_labels[i], in this
-- backend's shard; zeros are skipped, equal (name, label) pairs summed, and the rows are
-- locked in (name, label) order, so that two writers never wait on each other crosswise.
-- Every writer of counters goes through here.
CREATE FUNCTION pgmail_count_add(p_names text[], p_labels text[], p_values bigint[])
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO pgmail_counters AS c (name, label, shard, value)
    SELECT k.name, k.label, pgmail_counter_shard(), sum(k.value)
      FROM unnest(p_names, p_labels, p_values) AS k (name, label, value)
     WHERE k.value > 0
     GROUP BY k.name, k.label
     ORDER BY k.name, k.label
    ON CONFLICT (name, label, shard) DO UPDATE SET value = c.value + EXCLUDED.value
$$;

-- Mail stored into local mailboxes: one per mailbox row, and its octets, by the
-- account's domain.
CREATE FUNCTION pgmail_count_mailbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgmail_count_add(array_agg(k.name), array_agg(k.label), array_agg(k.value))
       FROM (SELECT lower(d.name) AS label, count(*) AS n, sum(r.size)::bigint AS octets
               FROM new_rows r JOIN accounts a ON a.id = r.account_id
               JOIN domains d ON d.id = a.domain_id
              GROUP BY 1) t
      CROSS JOIN LATERAL (VALUES ('received', t.label, t.n),
                                 ('received_bytes', t.label, t.octets)) AS k (name, label, value);
    RETURN NULL;
END
$$;

CREATE TRIGGER mailbox_count AFTER INSERT ON mailbox
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pgmail_count_mailbox();

-- Every outbound attempt by outcome, and the delivered ones by the sender's local domain
-- ('other' for a sender of no local domain, such as a DSN's null sender).
CREATE FUNCTION pgmail_count_attempt() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgmail_count_add(array_agg(k.name), array_agg(k.label), array_agg(k.value))
       FROM (SELECT 'deliveries' AS name, r.outcome AS label, 1::bigint AS value FROM new_rows r
             UNION ALL
             SELECT 'delivered', coalesce(
                        (SELECT lower(d.name) FROM domains d
                          WHERE lower(d.name) = lower(substring(q.sender from '[^@]*$'))
                            AND position('@' in q.sender) > 0), 'other'), 1
               FROM new_rows r JOIN queue q ON q.id = r.queue_id
              WHERE r.outcome = 'delivered') k;
    RETURN NULL;
END
$$;

CREATE TRIGGER queue_attempts_count AFTER INSERT ON queue_attempts
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pgmail_count_attempt();

-- A local bounce (a full or vanished mailbox, migrations/007) is a queue row born bounced,
-- with no attempt: it counts as a delivery bounced.
CREATE FUNCTION pgmail_count_local_bounce() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgmail_count_add('{deliveries}', '{bounced}', ARRAY[count(*)])
       FROM new_rows r WHERE r.state = 'bounced';
    RETURN NULL;
END
$$;

CREATE TRIGGER queue_count AFTER INSERT ON queue
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pgmail_count_local_bounce();

-- One failed login of service p_service (the program: pgmail-smtpd, pgmail-pop3d).
CREATE FUNCTION pgmail_count_login_failure(p_service text) RETURNS void
LANGUAGE sql AS $$
    SELECT pgmail_count_add('{login_failures}', ARRAY[left(p_service, 64)], '{1}')
$$;

-- The start for an existing installation (see the top).
INSERT INTO pgmail_counters (name, label, shard, value)
SELECT k.name, k.label, 0, k.value
  FROM (SELECT lower(d.name) AS label, count(*) AS n, sum(b.size) AS octets
          FROM mailbox b JOIN accounts a ON a.id = b.account_id
          JOIN domains d ON d.id = a.domain_id GROUP BY 1) t
 CROSS JOIN LATERAL (VALUES ('received', t.label, t.n),
                            ('received_bytes', t.label, t.octets)) AS k (name, label, value);
INSERT INTO pgmail_counters (name, label, shard, value)
SELECT 'deliveries', o.outcome, 0, o.n
  FROM (SELECT x.outcome, sum(x.n) AS n
          FROM (SELECT outcome, count(*) AS n FROM queue_attempts GROUP BY outcome
                UNION ALL
                SELECT 'bounced', count(*) FROM queue q
                 WHERE q.state = 'bounced'
                   AND NOT EXISTS (SELECT FROM queue_attempts a WHERE a.queue_id = q.id)) x
         GROUP BY x.outcome HAVING sum(x.n) > 0) o;
INSERT INTO pgmail_counters (name, label, shard, value)
SELECT 'delivered', coalesce(d.name, 'other'), 0, count(*)
  FROM queue_attempts a JOIN queue q ON q.id = a.queue_id
  LEFT JOIN (SELECT lower(name) AS name FROM domains) d
         ON d.name = lower(substring(q.sender from '[^@]*$')) AND position('@' in q.sender) > 0
 WHERE a.outcome = 'delivered'
 GROUP BY 1, 2, 3;

-- What the windowed questions of pgmailctl stats need (the rest has its indexes).
CREATE INDEX messages_received_idx ON messages (received_at) INCLUDE (sender, size);
CREATE INDEX mailbox_received_idx ON mailbox (received_at) INCLUDE (account_id, size);
CREATE INDEX queue_attempts_at_idx ON queue_attempts (at) INCLUDE (outcome);
CREATE INDEX queue_deferred_idx ON queue (arrived_at) WHERE state = 'deferred';
CREATE INDEX queue_arrived_idx ON queue (arrived_at) WHERE account_id IS NOT NULL;
-- The unfinished queue by state (finished rows are kept as history and may be many).
CREATE INDEX queue_unfinished_idx ON queue (state) WHERE state IN ('queued', 'deferred', 'held');

-- Every counter, its shards summed.
CREATE VIEW pgmail_metrics_counters AS
SELECT name, label, sum(value)::bigint AS value FROM pgmail_counters GROUP BY name, label;

-- Per local domain: mailboxes, the messages and octets they hold (accounts' totals,
-- kept by every writer: migrations/002).
CREATE VIEW pgmail_metrics_domains AS
SELECT lower(d.name) AS domain, count(a.id) AS mailboxes,
       coalesce(sum(a.message_count), 0)::bigint AS messages,
       coalesce(sum(a.used_bytes), 0)::bigint AS bytes
  FROM domains d LEFT JOIN accounts a ON a.domain_id = d.id
 GROUP BY 1;

-- The unfinished queue by state (every state present, 0 when empty), and the age of the
-- oldest deferred recipient in seconds (0 when none).
CREATE VIEW pgmail_metrics_queue AS
SELECT s.state, count(q.id) AS recipients
  FROM (VALUES ('queued'), ('deferred'), ('held')) AS s (state)
  LEFT JOIN queue q ON q.state = s.state AND q.state IN ('queued', 'deferred', 'held')
 GROUP BY s.state;

CREATE VIEW pgmail_metrics_oldest_deferred AS
SELECT coalesce(extract(epoch FROM now() - min(arrived_at)), 0)::double precision AS seconds
  FROM queue WHERE state = 'deferred';

-- Per mailbox (only with metrics_per_user = yes, and for pgmailctl stats).
CREATE VIEW pgmail_metrics_mailboxes AS
SELECT lower(a.address) AS address, a.message_count AS messages, a.used_bytes AS bytes
  FROM accounts a;

-- Everything pgmail-metrics exports, one row per sample: metric (its name without the
-- pgmail_ prefix and without _total), label (the value of its one label, NULL for none).
CREATE VIEW pgmail_metrics AS
SELECT c.name AS metric, c.label, c.value::double precision AS value
  FROM pgmail_metrics_counters c
UNION ALL
SELECT k.metric, d.domain, k.value
  FROM pgmail_metrics_domains d
 CROSS JOIN LATERAL (VALUES ('mailboxes', d.mailboxes::double precision),
                            ('mailbox_messages', d.messages::double precision),
                            ('mailbox_bytes', d.bytes::double precision)) AS k (metric, value)
UNION ALL
SELECT 'queue_recipients', q.state, q.recipients FROM pgmail_metrics_queue q
UNION ALL
SELECT 'queue_oldest_deferred_seconds', NULL, o.seconds FROM pgmail_metrics_oldest_deferred o
UNION ALL
SELECT 'store_bytes', NULL, pg_total_relation_size('messages')::double precision;
