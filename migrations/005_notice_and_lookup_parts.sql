-- 005_notice_and_lookup_parts.sql - one delivery function for every message, the notice of
-- unknown recipients included; the recipient lookup in named parts.
--
-- Why: pgmail-smtpd stored its notices ("Recipient X was not found.") with a statement of
-- its own, a second copy of the delivery rule of migrations/003 that had already drifted
-- (an account deleted meanwhile got no mailbox row and left the notice's messages row
-- behind). Now pgmail_deliver_message writes the mailbox rows of all new mail, and a notice
-- differs from other mail in one documented point: it is delivered whatever its account's
-- quota (below).
-- And pgmail_rcpt_lookup did three jobs in one query; they are now three named parts, still
-- one round trip for pgmail-smtpd.
--
-- Independent of 004: this file replaces only functions of 003, and takes no table lock.

-- pgmail_deliver_message of 003 with one more parameter, p_quota: true (the default, and
-- what every caller of 003 gets) delivers only within each account's quota and otherwise
-- fails whole with SQLSTATE PM001; false delivers whatever the quota, the totals counting
-- the message all the same. Only pgmail_deliver_notice passes false.
DROP FUNCTION pgmail_deliver_message(bigint, bigint, bigint[]);
CREATE FUNCTION pgmail_deliver_message(p_message bigint, p_size bigint, p_accounts bigint[],
                                       p_quota boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    wanted bigint;
    delivered bigint;
BEGIN
    SELECT count(DISTINCT a) INTO wanted FROM unnest(p_accounts) AS a;
    -- The account row is locked (UPDATE) before its mailbox row takes an id, and stays
    -- locked until COMMIT: so within one mailbox ids become visible in increasing order,
    -- which pgmail-pop3d relies on to number a mailbox from its totals and highest id.
    WITH q AS (UPDATE accounts a
                  SET used_bytes = a.used_bytes + p_size, message_count = a.message_count + 1
                WHERE a.id = ANY (p_accounts)
                  AND (NOT p_quota OR a.quota_bytes IS NULL
                       OR a.used_bytes + p_size <= a.quota_bytes)
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

-- The notice an authenticated sender gets for the unknown local recipients of a message:
-- stored from the null reverse-path (RFC 5321 4.5.5) and delivered to account p_account by
-- pgmail_deliver_message like any message, but whatever the quota. Why: the notice is the
-- only word the sender gets that part of the message went nowhere, and refusing it would
-- refuse the message to its real recipients too. It cannot grow without bound: there is
-- one notice per message, never more than 16 KiB (pgmail-smtpd cuts it; LIM_NOTICE in
-- shared/mail_limits.h), and it counts toward the quota, so the account's own incoming
-- mail is refused once it is full. Returns the notice's message id.
CREATE FUNCTION pgmail_deliver_notice(p_account bigint, p_session text, p_body bytea)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO messages (sender, session_id, body, size)
    VALUES ('', p_session, p_body, octet_length(p_body))
    RETURNING id INTO new_id;
    PERFORM pgmail_deliver_message(new_id, octet_length(p_body), ARRAY[p_account], false);
    RETURN new_id;
END
$$;

-- Part 1 of the recipient lookup, the lookup itself: one row per target account of address
-- p_address in domain p_domain (both lower case); a row with a NULL account means "a local
-- domain, no such user"; no row means the domain is not ours.
CREATE FUNCTION pgmail_rcpt_targets(p_address text, p_domain text)
RETURNS TABLE (domain_id bigint, account_id bigint, quota_bytes bigint, used_bytes bigint)
LANGUAGE sql STABLE AS $$
    SELECT d.id, t.id, t.quota_bytes, t.used_bytes
      FROM domains d
      LEFT JOIN LATERAL (
           SELECT a.id, a.quota_bytes, a.used_bytes FROM accounts a
            WHERE a.id IN (SELECT x.id FROM accounts x WHERE lower(x.address) = p_address
                           UNION
                           SELECT y.account_id FROM aliases y
                            WHERE lower(y.address) = p_address)) t ON true
     WHERE lower(d.name) = p_domain
$$;

-- Part 2, the id of the next messages row: drawn at the first RCPT of a transaction, so that
-- the message is stored by one COPY that carries its id and the 250 reply can name it.
CREATE FUNCTION pgmail_next_message_id()
RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT nextval(pg_get_serial_sequence('messages', 'id'))
$$;

-- Part 4, room for a notice: whether account p_account (the authenticated sender, who
-- would get the notice of an unknown recipient) is still within its quota. Once it is not,
-- pgmail-smtpd refuses unknown recipients at RCPT (550 5.1.1) instead of accepting them for
-- a notice: the sender learns it at once, and notices, which enter the mailbox whatever its
-- quota, can push it past the quota by at most one notice per message in flight, never
-- without bound. NULL when there is no such account (not authenticated).
CREATE FUNCTION pgmail_notice_room(p_account bigint)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT a.quota_bytes IS NULL OR a.used_bytes < a.quota_bytes
      FROM accounts a WHERE a.id = p_account
$$;

-- What pgmail-smtpd calls at each RCPT, one round trip: the rows of part 1, each with part 3,
-- the server's statement_timeout (pgmail-smtpd switches it off around a COPY when one is
-- set), when p_new_id is true the id of part 2 (the same in every row), and part 4 for
-- p_sender (the authenticated account, NULL when there is none) when the address is an
-- unknown user of a local domain (NULL otherwise: it is only asked when it matters).
DROP FUNCTION pgmail_rcpt_lookup(text, text, boolean);
CREATE FUNCTION pgmail_rcpt_lookup(p_address text, p_domain text, p_new_id boolean,
                                   p_sender bigint)
RETURNS TABLE (domain_id bigint, account_id bigint, quota_bytes bigint, used_bytes bigint,
               statement_timeout text, message_id bigint, notice_room boolean)
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
               CASE WHEN t.account_id IS NULL THEN pgmail_notice_room(p_sender) END
          FROM pgmail_rcpt_targets(p_address, p_domain) t;
END
$$;
