-- 008_dsn.sql - where a delivery status notification goes: pgmail_store_dsn.
--
-- Why in the database: pgmail-relay composes a DSN (relay/dsn.c) for the original sender,
-- who is either one of our own accounts (the DSN goes straight into the mailbox, as
-- pgmail-smtpd's notices do: migrations/005) or somebody elsewhere (the DSN is queued like
-- any outbound mail). Deciding that takes the same lookup as an incoming RCPT
-- (pgmail_rcpt_targets of 005), and doing it in one function keeps the rule in one place
-- and the DSN's storage in the same transaction as the queue rows it reports on.
--
-- Independent of 007 (the insert trigger that turns messages.relay_to into queue rows):
-- the messages row is stored without relay_to and its one queue row is inserted here, so
-- the result is the same with or without that trigger. Takes no table lock.

-- pgmail_store_dsn: store DSN p_body (the whole message, CRLF line ends) for p_recipient,
-- the original sender, always from the null reverse-path (RFC 5321 4.5.5: a DSN never
-- gets a DSN, so no loops), in session p_session (for the log's and messages' session_id).
--  * p_recipient in a local domain (domains): delivered to the account(s) the address
--    resolves to (accounts and aliases, lower case; when unknown as given, once more
--    without its +extension: the local part cut at the first character of p_delimiter,
--    as pgmail-smtpd does with recipient_delimiter), whatever their quota, like
--    pgmail_deliver_notice and for the same reason: a bounce is the only word the sender
--    gets that mail went nowhere. "Return-Path: <>" is prepended, as final delivery does
--    (RFC 5321 4.4). Returns the message id. An unknown address of a local domain gets
--    nothing: returns NULL (there is nobody to tell).
--  * any other domain: one messages row and one queue row (state queued, due now, sender
--    '', no account: a DSN counts toward nobody's outbound limit); the queue's trigger of
--    006 wakes pgmail-relay at COMMIT. Returns the message id.
--  * p_recipient '' or without a domain: nothing is stored, NULL.
CREATE FUNCTION pgmail_store_dsn(p_recipient text, p_body bytea, p_session text,
                                 p_delimiter text DEFAULT '+')
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    at int := length(p_recipient) - strpos(reverse(p_recipient), '@') + 1;
    addr text := lower(p_recipient);
    dom text;
    local text;
    cut int := 0;
    pos int;
    targets bigint[];
    body bytea;
    new_id bigint;
BEGIN
    IF p_recipient IS NULL OR strpos(p_recipient, '@') < 2 OR at = length(p_recipient) THEN
        RETURN NULL;
    END IF;
    dom := substr(addr, at + 1);
    local := substr(addr, 1, at - 1);
    IF NOT EXISTS (SELECT FROM domains d WHERE lower(d.name) = dom) THEN
        INSERT INTO messages (sender, session_id, body, size)
        VALUES ('', p_session, p_body, octet_length(p_body))
        RETURNING id INTO new_id;
        INSERT INTO queue (message_id, sender, recipient, domain, account_id, state)
        VALUES (new_id, '', p_recipient, dom, NULL, 'queued');
        RETURN new_id;
    END IF;

    SELECT array_agg(DISTINCT t.account_id) INTO targets
      FROM pgmail_rcpt_targets(addr, dom) t WHERE t.account_id IS NOT NULL;
    IF targets IS NULL AND coalesce(p_delimiter, '') <> '' THEN
        -- The extension starts at the first delimiter character found; with nothing before
        -- it ("+x") the local part is kept whole (smtp/address.c, smtp_lookup_key).
        FOR i IN 1 .. length(p_delimiter) LOOP
            pos := strpos(local, substr(p_delimiter, i, 1));
            IF pos > 0 AND (cut = 0 OR pos < cut) THEN
                cut := pos;
            END IF;
        END LOOP;
        IF cut > 1 THEN
            SELECT array_agg(DISTINCT t.account_id) INTO targets
              FROM pgmail_rcpt_targets(substr(local, 1, cut - 1) || '@' || dom, dom) t
             WHERE t.account_id IS NOT NULL;
        END IF;
    END IF;
    IF targets IS NULL THEN
        RETURN NULL;
    END IF;

    body := convert_to(E'Return-Path: <>\r\n', 'UTF8') || p_body;
    INSERT INTO messages (sender, session_id, body, size)
    VALUES ('', p_session, body, octet_length(body))
    RETURNING id INTO new_id;
    PERFORM pgmail_deliver_message(new_id, octet_length(body), targets, false);
    RETURN new_id;
END
$$;
