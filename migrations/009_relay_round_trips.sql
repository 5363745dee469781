-- 009_relay_round_trips.sql - fewer statements per relayed message (measured by
-- tests/bench/outbound.py: every statement is a parse, a plan and a round trip, and the
-- outbound path had about thirteen of them per message).
--
-- 1. The notification names what became due: the recipient's domain for a due row, ''
--    for a row that owes a DSN. pgmail-relay wakes the destination's idle agent, or claims
--    for that destination, without first asking which destinations have work. A relay
--    that ignores payloads (older binaries) works as before.
-- 2. A message's outcome is one call (pgmail_relay_outcome): every recipient's new state
--    and attempt row, and the freeing of the message, in one round trip instead of five,
--    with the plans kept by the function for the life of the connection.
-- 3. The outbound limit counts at most the limit's number of rows: the answer is the same
--    (room is never below 0) and the cost stays bounded however much an account sends.

SET LOCAL lock_timeout = '10s';

CREATE OR REPLACE FUNCTION pgmail_queue_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The trigger's WHEN clause (migrations/006) says that one of the two holds; equal
    -- notifications of one transaction are folded into one by PostgreSQL.
    IF NEW.dsn IS NOT NULL THEN
        PERFORM pg_notify('pgmail_queue', '');
    END IF;
    IF NEW.state IN ('queued', 'deferred') AND NEW.next_attempt <= now()
       AND NEW.lease_until IS NULL THEN
        PERFORM pg_notify('pgmail_queue', NEW.domain);
    END IF;
    RETURN NULL;
END
$$;

-- One message's attempt, for the recipients p_ids (the same index in every array): p_kinds
-- 2 delivered, 5 bounced, else deferred (a deferral waits the message's age clamped to
-- [p_min_backoff, p_max_backoff] seconds, +-10 %, so that retries spread out as Postfix's
-- do; past p_lifetime seconds a temporary failure bounces); a bounce owes a DSN unless the
-- sender is null (RFC 3461 6.2: no DSN about a DSN). Only rows still leased to p_owner are
-- written: a relay whose lease ran out (and was taken over) changes nothing; such rows are
-- missing from the result. Then the message row goes when nothing needs it any more
-- (pgmail_message_needed, asked after locking the row, in a statement of its own, as every
-- remover does). The caller runs it in autocommit: it is the whole transaction.
CREATE FUNCTION pgmail_relay_outcome(p_message bigint, p_owner text, p_ids bigint[],
                                     p_kinds integer[], p_codes integer[], p_status text[],
                                     p_replies text[], p_hosts text[], p_addresses text[],
                                     p_tls text[], p_lifetime double precision,
                                     p_min_backoff double precision,
                                     p_max_backoff double precision)
RETURNS TABLE (queue_id bigint, state text, attempts integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH i AS (SELECT * FROM unnest(p_ids, p_kinds, p_codes, p_status, p_replies, p_hosts,
                                    p_addresses, p_tls)
                 AS t (id, kind, code, status, reply, host, address, tls)),
    s AS (SELECT q.id, i.code, i.status, i.reply, nullif(i.host, '') AS host,
                 nullif(i.address, '') AS address, nullif(i.tls, '') AS tls,
                 CASE WHEN i.kind = 2 THEN 'delivered'
                      WHEN i.kind = 5 OR q.arrived_at + make_interval(secs => p_lifetime)
                           <= now() THEN 'bounced'
                      ELSE 'deferred' END AS st,
                 least(greatest(extract(epoch FROM now() - q.arrived_at), p_min_backoff),
                       p_max_backoff) AS backoff
            FROM queue q JOIN i ON q.id = i.id
           WHERE q.lease_owner = p_owner AND q.state IN ('queued', 'deferred')),
    u AS (UPDATE queue q SET state = s.st, attempts = q.attempts + 1,
                 next_attempt = CASE WHEN s.st = 'deferred' THEN now()
                     + make_interval(secs => s.backoff * (0.9 + 0.2 * random()))
                     ELSE q.next_attempt END,
                 finished_at = CASE WHEN s.st <> 'deferred' THEN now() END,
                 dsn = CASE WHEN s.st = 'bounced' AND q.sender <> '' THEN 'failed'
                     ELSE q.dsn END,
                 lease_owner = NULL, lease_until = NULL, last_attempt = now(),
                 last_code = s.code, last_status = s.status, last_reply = s.reply,
                 last_host = s.host, last_address = s.address, last_tls = s.tls
            FROM s WHERE q.id = s.id
          RETURNING q.id, q.state, q.attempts, s.code, s.status, s.reply, s.host, s.address,
                    s.tls),
    a AS (INSERT INTO queue_attempts (queue_id, outcome, code, status, reply, host, address,
                                      tls)
          SELECT u.id, u.state, u.code, u.status, u.reply, u.host, u.address, u.tls FROM u)
    SELECT u.id, u.state, u.attempts FROM u;
    PERFORM 1 FROM messages m WHERE m.id = p_message FOR UPDATE;
    IF FOUND THEN
        DELETE FROM messages m WHERE m.id = p_message AND NOT pgmail_message_needed(p_message);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgmail_outbound_room(p_account bigint, p_default integer,
                                                p_new_id boolean)
RETURNS TABLE (room bigint, message_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    lim integer := p_default;
    new_id bigint;
BEGIN
    IF p_new_id THEN
        new_id := pgmail_next_message_id();
    END IF;
    SELECT coalesce(a.outbound_limit, p_default) INTO lim FROM accounts a WHERE a.id = p_account;
    IF NOT FOUND THEN
        lim := p_default;
    END IF;
    IF lim IS NULL OR lim < 0 THEN
        RETURN QUERY SELECT NULL::bigint, new_id;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT greatest(lim - (SELECT count(*) FROM (SELECT 1 FROM queue q
                                WHERE q.account_id = p_account
                                  AND q.arrived_at > now() - interval '1 hour'
                                LIMIT lim) n), 0), new_id;
END
$$;

-- The claim (relay/sql.c says what it does and why it commits without waiting for the WAL
-- flush): a function so that its plans are kept for the life of the connection instead of
-- being made anew for every claim, most of which find one message or none. The columns:
-- queue id, message id, recipient, sender, size (-1: the message row is gone), age in
-- seconds, the body when the message has at most p_prefetch octets (in its first row
-- only), and the octets of the Return-Path line pgmail-smtpd stored first, which a relayed
-- message goes without (RFC 5321 4.4: the final delivery adds its own).
CREATE FUNCTION pgmail_relay_claim(p_owner text, p_lease double precision, p_domain text,
                                   p_messages integer, p_prefetch bigint)
RETURNS TABLE (queue_id bigint, message_id bigint, recipient text, sender text, size bigint,
               age bigint, body bytea, skip integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH m AS (SELECT DISTINCT q.message_id FROM queue q
                WHERE q.state IN ('queued', 'deferred') AND q.next_attempt <= now()
                  AND (q.lease_until IS NULL OR q.lease_until < now())
                  AND (p_domain IS NULL OR q.domain = p_domain)
                ORDER BY q.message_id LIMIT p_messages),
    c AS (SELECT q.id FROM queue q
           WHERE q.message_id IN (SELECT m.message_id FROM m)
             AND q.state IN ('queued', 'deferred') AND q.next_attempt <= now()
             AND (q.lease_until IS NULL OR q.lease_until < now())
             AND (p_domain IS NULL OR q.domain = p_domain)
           FOR UPDATE SKIP LOCKED),
    u AS (UPDATE queue q SET lease_owner = p_owner,
                 lease_until = now() + make_interval(secs => p_lease)
            FROM c WHERE q.id = c.id
          RETURNING q.id, q.message_id, q.recipient, q.sender, q.arrived_at)
    SELECT u.id, u.message_id, u.recipient, u.sender, coalesce(g.size, -1)::bigint,
           extract(epoch FROM now() - u.arrived_at)::bigint,
           CASE WHEN g.size <= p_prefetch
                 AND u.id = min(u.id) OVER (PARTITION BY u.message_id) THEN g.body END,
           CASE WHEN substring(g.body FROM 1 FOR 13) = '\x52657475726e2d506174683a20'::bytea
                THEN coalesce(nullif(position('\x0d0a'::bytea
                       IN substring(g.body FROM 1 FOR 600)), 0) + 1, 0)
                ELSE 0 END
      FROM u LEFT JOIN messages g ON g.id = u.message_id
     ORDER BY u.message_id, u.id;
END
$$;

-- 4. The RCPT lookup answers for a remote recipient too, one round trip instead of two:
--    with p_outbound_default (the configured max_outbound_per_hour; NULL when the session
--    is not authenticated, which may not relay), an address of a domain that is not ours
--    gets one row with a NULL domain and the sender's outbound room (NULL: no limit), as
--    pgmail_outbound_room counts it. The 4-argument function, which pgmail-smtpd binaries
--    of before this migration call, becomes this one without it.
CREATE FUNCTION pgmail_rcpt_lookup(p_address text, p_domain text, p_new_id boolean,
                                   p_sender bigint, p_outbound_default integer)
RETURNS TABLE (domain_id bigint, account_id bigint, quota_bytes bigint, used_bytes bigint,
               statement_timeout text, message_id bigint, notice_room boolean, room bigint)
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    IF p_new_id THEN
        new_id := pgmail_next_message_id();
    END IF;
    RETURN QUERY
        SELECT t.domain_id, t.account_id, t.quota_bytes, t.used_bytes,
               current_setting('statement_timeout'), new_id,
               CASE WHEN t.account_id IS NULL THEN pgmail_notice_room(p_sender) END,
               NULL::bigint
          FROM pgmail_rcpt_targets(p_address, p_domain) t;
    IF NOT FOUND AND p_sender IS NOT NULL AND p_outbound_default IS NOT NULL THEN
        RETURN QUERY
            SELECT NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint,
                   current_setting('statement_timeout'), new_id, NULL::boolean, r.room
              FROM pgmail_outbound_room(p_sender, p_outbound_default, false) r;
    END IF;
END
$$;

DROP FUNCTION pgmail_rcpt_lookup(text, text, boolean, bigint);
CREATE FUNCTION pgmail_rcpt_lookup(p_address text, p_domain text, p_new_id boolean,
                                   p_sender bigint)
RETURNS TABLE (domain_id bigint, account_id bigint, quota_bytes bigint, used_bytes bigint,
               statement_timeout text, message_id bigint, notice_room boolean)
LANGUAGE sql AS $$
    SELECT l.domain_id, l.account_id, l.quota_bytes, l.used_bytes, l.statement_timeout,
           l.message_id, l.notice_room
      FROM pgmail_rcpt_lookup(p_address, p_domain, p_new_id, p_sender, NULL) l
$$;
