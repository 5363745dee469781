-- 007_submission.sql - a message's own INSERT/COPY delivers it to its local accounts AND
-- queues its remote recipients; a full or vanished mailbox no longer sinks the message for
-- everyone; the outbound room of an account.
--
-- Why: until now a message was delivered to all its accounts or stored not at all
-- (SQLSTATE PM001): one full mailbox refused it, with a permanent 552, to every
-- co-recipient. Now the accounts with room get it and each other one gets a finished queue
-- row (state bounced, dsn failed) from which pgmail-relay writes the sender a delivery
-- status notification (5.2.2 over quota, 5.1.1 gone); only when nobody can take it does
-- the statement fail as before. And with outbound mail (migrations/006) the same statement
-- writes a queue row per remote recipient (messages.relay_to), so local and remote
-- recipients are committed together, before pgmail-smtpd's 250.
--
-- Upgrade pgmail-smtpd with this migration (it sends relay_to, submitted_by and
-- deliver_names, and reads SQLSTATE PM003). An older pgmail-smtpd keeps working: its rows
-- have no relay_to and get the partial delivery too (a partly failed message is 250 then).

SET LOCAL lock_timeout = '10s';

-- The address each account of deliver_to was named by at RCPT (same order, same length;
-- for an alias its own address). Only the delivery reads it, for the queue row of an
-- account that was deleted between RCPT and the end of DATA: its address is gone with it,
-- and the sender's DSN names what the sender wrote. NULL for rows of older writers.
ALTER TABLE messages ADD COLUMN deliver_names text[];

-- The delivery of one new message: p_accounts (distinct or not) get a mailbox row each
-- while within quota (as migrations/005's pgmail_deliver_message with p_quota); every
-- account over its quota or gone gets a queue row, finished as bounced with a DSN owed to
-- the sender (none for the null sender: RFC 3461 and 5321 6.1 never answer it); every
-- address in p_relay_to gets a queue row for pgmail-relay, on behalf of account p_by (the
-- authenticated sender, whose outbound limit counts those rows; NULL for a local bounce
-- row, which is not outbound mail).
-- Fails, and with it the whole message, only when no account got it and nothing is to be
-- relayed: SQLSTATE PM001 when an account was over quota (pgmail-smtpd: 552 5.2.2), PM003
-- when every account was gone (550 5.1.1).
-- Lock order as before: each account row (UPDATE) before its mailbox row takes an id,
-- held until COMMIT (pgmail-pop3d numbers a mailbox from that, migrations/003).
CREATE FUNCTION pgmail_deliver_partial(p_message bigint, p_size bigint, p_sender text,
                                       p_accounts bigint[], p_names text[],
                                       p_relay_to text[], p_by bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    got bigint[];
    full_count bigint := 0;
    dsn_kind text := CASE WHEN p_sender = '' THEN NULL ELSE 'failed' END;
BEGIN
    WITH q AS (UPDATE accounts a
                  SET used_bytes = a.used_bytes + p_size, message_count = a.message_count + 1
                WHERE a.id = ANY (p_accounts)
                  AND (a.quota_bytes IS NULL OR a.used_bytes + p_size <= a.quota_bytes)
            RETURNING a.id),
         m AS (INSERT INTO mailbox (account_id, message_id, size)
               SELECT q.id, p_message, p_size FROM q RETURNING account_id)
    SELECT coalesce(array_agg(m.account_id), '{}') INTO got FROM m;

    IF cardinality(got) < (SELECT count(DISTINCT x) FROM unnest(p_accounts) x) THEN
        -- Over quota: the account still exists (not locked: it may change meanwhile, and
        -- then the DSN describes the moment of delivery, which is what happened).
        INSERT INTO queue (message_id, sender, recipient, domain, state, finished_at,
                           last_attempt, last_code, last_status, last_reply, dsn)
        SELECT p_message, p_sender, a.address, lower(substring(a.address from '[^@]*$')),
               'bounced', now(), now(), 552, '5.2.2',
               'mailbox full: the message would exceed the quota of ' || a.address, dsn_kind
          FROM accounts a
         WHERE a.id = ANY (p_accounts) AND a.id <> ALL (got);
        GET DIAGNOSTICS full_count = ROW_COUNT;
        -- Gone: named by what the sender wrote at RCPT (deliver_names), when known.
        INSERT INTO queue (message_id, sender, recipient, domain, state, finished_at,
                           last_attempt, last_code, last_status, last_reply, dsn)
        SELECT p_message, p_sender, g.name, lower(substring(g.name from '[^@]*$')),
               'bounced', now(), now(), 550, '5.1.1',
               'no such user: the account ' || g.name || ' no longer exists', dsn_kind
          FROM (SELECT DISTINCT ON (t.id) t.id, t.name
                  FROM unnest(p_accounts, p_names) AS t (id, name)
                 WHERE t.id IS NOT NULL AND t.id <> ALL (got)
                   AND NOT EXISTS (SELECT FROM accounts a WHERE a.id = t.id)
                 ORDER BY t.id) g
         WHERE position('@' in g.name) > 1;
        -- (A gone account without a name, from an older writer, gets no row: the
        -- SQLSTATE below still says "gone" for it.)
    END IF;

    IF cardinality(p_relay_to) > 0 THEN
        INSERT INTO queue (message_id, sender, recipient, domain, account_id)
        SELECT p_message, p_sender, r, lower(substring(r from '[^@]*$')), p_by
          FROM unnest(p_relay_to) r;
    ELSIF cardinality(got) = 0 AND cardinality(p_accounts) > 0 THEN
        IF full_count > 0 THEN
            RAISE EXCEPTION 'message % not delivered: every account would pass its quota or is gone',
                p_message USING ERRCODE = 'PM001';
        END IF;
        RAISE EXCEPTION 'message % not delivered: every account is gone', p_message
            USING ERRCODE = 'PM003';
    END IF;
END
$$;

-- The insert trigger of migrations/003, now for rows with local accounts, remote
-- recipients or both. pgmail_deliver_notice (migrations/005) inserts without either and
-- delivers by itself, all or nothing and whatever the quota, as before.
CREATE OR REPLACE FUNCTION pgmail_deliver() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgmail_deliver_partial(NEW.id, NEW.size, NEW.sender, NEW.deliver_to,
                                   NEW.deliver_names, NEW.relay_to, NEW.submitted_by);
    RETURN NULL;
END
$$;

DROP TRIGGER messages_deliver ON messages;
CREATE TRIGGER messages_deliver AFTER INSERT ON messages
    FOR EACH ROW WHEN (NEW.deliver_to IS NOT NULL OR NEW.relay_to IS NOT NULL)
    EXECUTE FUNCTION pgmail_deliver();

-- pgmail_deliver_later of migrations/003 (the statement_timeout path: a row stored without
-- recipients, delivered by a statement after the COPY) with the remote recipients, the
-- submitting account and the names; the old two-argument call still works (defaults).
DROP FUNCTION pgmail_deliver_later(bigint, bigint[]);
CREATE FUNCTION pgmail_deliver_later(p_message bigint, p_accounts bigint[],
                                     p_relay_to text[] DEFAULT NULL, p_by bigint DEFAULT NULL,
                                     p_names text[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    octets bigint;
    from_addr text;
BEGIN
    UPDATE messages m
       SET deliver_to = p_accounts, deliver_names = p_names, relay_to = p_relay_to,
           submitted_by = p_by
     WHERE m.id = p_message AND m.deliver_to IS NULL AND m.relay_to IS NULL
    RETURNING m.size, m.sender INTO octets, from_addr;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % is not waiting for delivery', p_message USING ERRCODE = 'PM002';
    END IF;
    PERFORM pgmail_deliver_partial(p_message, octets, from_addr, p_accounts, p_names,
                                   p_relay_to, p_by);
    RETURN p_message;
END
$$;

-- The outbound room of account p_account, asked by pgmail-smtpd at a remote RCPT: how many
-- more remote recipients it may send in the rolling hour, by its queue rows of the last
-- hour against its outbound_limit (NULL: p_default, max_outbound_per_hour); NULL room means
-- no limit (-1). With p_new_id, also the id of the next messages row, as
-- pgmail_rcpt_lookup draws it for a local recipient (migrations/005), for a transaction
-- whose first recipient is remote. One row always (an account deleted meanwhile counts
-- with p_default).
CREATE FUNCTION pgmail_outbound_room(p_account bigint, p_default integer, p_new_id boolean)
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
        SELECT greatest(lim - (SELECT count(*) FROM queue q
                                WHERE q.account_id = p_account
                                  AND q.arrived_at > now() - interval '1 hour'), 0), new_id;
END
$$;
