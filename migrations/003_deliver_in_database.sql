-- 003_deliver_in_database.sql - delivery as part of the message's own INSERT/COPY; the
-- recipient lookup and the opening of a POP3 maildrop as functions.
--
-- Why: per message, pgmail-smtpd needed six round trips to the database (lookup, BEGIN,
-- COPY, the COPY's data, the delivery statement, COMMIT), and PostgreSQL planned the lookup
-- and the delivery statement anew each time: prepared statements do not survive a pooler in
-- transaction mode. Measured through PgBouncer, that was ~1.0 ms of PostgreSQL CPU and
-- ~0.2 ms of PgBouncer CPU per message, of which the same work as below needs ~0.6 and ~0.1.
-- A POP3 login likewise opens its maildrop in one round trip instead of two.
-- PL/pgSQL keeps the plans of its statements for the life of the server connection, which a
-- pooler reuses across client sessions; and a messages row inserted with its accounts in
-- deliver_to is delivered by the statement that stores it, so a message without bounces is
-- one statement (the COPY) in its own transaction: committed or not at all.
--
-- Upgrade the programs together with this migration (pgmail-smtpd of this version calls
-- pgmail_rcpt_lookup; an older one keeps working, with its own delivery statement).

-- An upgrade in place waits for the lock on messages, which a POP3 session that has read a
-- message holds until it ends, and meanwhile every delivery would queue behind it: give up
-- after 10 seconds instead (nothing is changed then; run pgmailctl migrate again).
SET LOCAL lock_timeout = '10s';

-- The local accounts a message was delivered to when it was stored (NULL: none; bounces
-- and rows written by older versions). Kept as the record of the envelope's local accounts;
-- setting it later delivers nothing (only the functions below deliver).
ALTER TABLE messages ADD COLUMN deliver_to bigint[]
    CONSTRAINT messages_deliver_to_check CHECK (cardinality(deliver_to) > 0);

-- Delivery of message p_message (p_size octets) to accounts p_accounts: each distinct
-- account gets a mailbox row and its totals grow, but only while it stays within its
-- quota. If any account would pass its quota (or no longer exists), the statement fails
-- with SQLSTATE PM001, and with it the message row: a message is delivered to all its
-- accounts or stored not at all. pgmail-smtpd answers 552 5.2.2 to that SQLSTATE.
-- The account row is locked (UPDATE) before its mailbox row takes an id, and stays locked
-- until COMMIT: so within one mailbox ids become visible in increasing order, which
-- pgmail-pop3d relies on to number a mailbox from its totals and highest id alone.
CREATE FUNCTION pgmail_deliver_message(p_message bigint, p_size bigint, p_accounts bigint[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    wanted bigint;
    delivered bigint;
BEGIN
    SELECT count(DISTINCT a) INTO wanted FROM unnest(p_accounts) AS a;
    WITH q AS (UPDATE accounts a
                  SET used_bytes = a.used_bytes + p_size, message_count = a.message_count + 1
                WHERE a.id = ANY (p_accounts)
                  AND (a.quota_bytes IS NULL OR a.used_bytes + p_size <= a.quota_bytes)
            RETURNING a.id),
         m AS (INSERT INTO mailbox (account_id, message_id, size)
               SELECT q.id, p_message, p_size FROM q RETURNING 1)
    SELECT count(*) INTO delivered FROM m;
    IF delivered <> wanted THEN
        RAISE EXCEPTION 'message % not delivered: % of % accounts would pass their quota or are gone',
            p_message, wanted - delivered, wanted
            USING ERRCODE = 'PM001';
    END IF;
END
$$;

-- A messages row inserted with deliver_to set is delivered by its own statement (INSERT or
-- COPY). A data-only restore (pg_restore --data-only) must pass --disable-triggers, or it
-- would deliver the restored messages once more.
CREATE FUNCTION pgmail_deliver() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgmail_deliver_message(NEW.id, NEW.size, NEW.deliver_to);
    RETURN NULL;
END
$$;

CREATE TRIGGER messages_deliver AFTER INSERT ON messages
    FOR EACH ROW WHEN (NEW.deliver_to IS NOT NULL) EXECUTE FUNCTION pgmail_deliver();

-- The delivery of a row stored without accounts, once: pgmail-smtpd's way when the server
-- has a statement_timeout (the COPY, paced by the client, runs with the timeout off, and
-- this after it with the timeout on). Fails with SQLSTATE PM002 when the row is missing or
-- already has its accounts.
CREATE FUNCTION pgmail_deliver_later(p_message bigint, p_accounts bigint[])
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    octets bigint;
BEGIN
    UPDATE messages m SET deliver_to = p_accounts
     WHERE m.id = p_message AND m.deliver_to IS NULL
    RETURNING m.size INTO octets;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % is not waiting for delivery', p_message USING ERRCODE = 'PM002';
    END IF;
    PERFORM pgmail_deliver_message(p_message, octets, p_accounts);
    RETURN p_message;
END
$$;

-- One row per target account of address p_address in domain p_domain (both lower case); a
-- row with a NULL account means "a local domain, no such user"; no row means the domain is
-- not ours. Also the server's statement_timeout (pgmail-smtpd switches it off around a COPY
-- when one is set) and, when p_new_id is true, a fresh id for the next messages row: the
-- message is then stored by one COPY that carries its id, and the 250 reply can name it.
CREATE FUNCTION pgmail_rcpt_lookup(p_address text, p_domain text, p_new_id boolean)
RETURNS TABLE (domain_id bigint, account_id bigint, quota_bytes bigint, used_bytes bigint,
               statement_timeout text, message_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    IF p_new_id THEN
        new_id := nextval(pg_get_serial_sequence('messages', 'id'));
    END IF;
    RETURN QUERY
        SELECT d.id, t.id, t.quota_bytes, t.used_bytes, current_setting('statement_timeout'),
               new_id
          FROM domains d
          LEFT JOIN LATERAL (
               SELECT a.id, a.quota_bytes, a.used_bytes FROM accounts a
                WHERE a.id IN (SELECT x.id FROM accounts x WHERE lower(x.address) = p_address
                               UNION
                               SELECT y.account_id FROM aliases y
                                WHERE lower(y.address) = p_address)) t ON true
         WHERE lower(d.name) = p_domain;
END
$$;

-- The opening of a POP3 maildrop, for pgmail-pop3d inside its READ COMMITTED transaction:
-- the mailbox's transaction-scoped advisory lock (class 7101 marks pgmail's among other users
-- of advisory locks) and, once held, the account's totals and highest mailbox id. One row:
-- locked false when another session holds the mailbox; no row when the account is gone.
-- The totals are read by a statement after the lock (a VOLATILE function takes a snapshot
-- per statement), so they include the previous holder's QUIT. The session's transaction
-- waits for the client between commands, which pop3_timeout bounds; a server-wide
-- idle_in_transaction_session_timeout shorter than that would end sessions under a reading
-- user, so it is off for this transaction only (SET LOCAL: nothing leaks to a pooled
-- connection). The totals are kept by every writer of mailbox rows (migrations/002); the
-- highest id fixes the maildrop, because ids of one mailbox become visible in increasing
-- order (pgmail_deliver_message above), so the rows up to it are exactly the ones counted.
CREATE FUNCTION pgmail_pop3_open(p_account bigint)
RETURNS TABLE (locked boolean, message_count bigint, used_bytes bigint, last_id bigint)
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(7101, p_account::int) THEN
        RETURN QUERY SELECT false, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    PERFORM set_config('idle_in_transaction_session_timeout', '0', true);
    RETURN QUERY
        SELECT true, a.message_count, a.used_bytes,
               coalesce((SELECT max(b.id) FROM mailbox b WHERE b.account_id = a.id), 0)
          FROM accounts a
         WHERE a.id = p_account;
END
$$;
