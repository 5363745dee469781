-- 004_mailbox_lock_bigint.sql - the POP3 mailbox lock keyed by the whole account id.
--
-- Why: pgmail_pop3_open (migrations/003) took pg_try_advisory_xact_lock(7101,
-- p_account::int), and the cast fails for an account id above 2^31-1, so such an account
-- could never log in. The key must hold any bigint id, and it must stay apart from every
-- other advisory lock of pgmail.
--
-- pgmail's advisory lock keys (one layout, written down here):
--   * two int4 keys (class, n): classes such as 7101 (the old mailbox lock) name a kind of
--     lock, n an object; PostgreSQL keeps these apart from all one-key locks.
--   * one int8 key, not negative: single locks of the whole installation, today
--     123589519042924 (pgmailctl migrate, admin/sql.c).
--   * one int8 key, negative: the mailbox of account id, as -id (ids are positive, from
--     a bigserial, so every id has its own key and none meets a lock of the line above).
-- pgmail_mailbox_lock_key below computes that key: anything that must exclude a POP3
-- session from a mailbox (pgmailctl user del) takes pg_advisory_xact_lock of it.
--
-- A POP3 session opened before this migration holds the old key until it ends, so a
-- login in that moment is not refused: migrate when no POP3 session is open (stop
-- pgmail-pop3d.socket, or just wait for a quiet moment).

SET LOCAL lock_timeout = '10s';

CREATE FUNCTION pgmail_mailbox_lock_key(p_account bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT -p_account $$;

-- As in migrations/003 (see there for the order, the snapshot per statement and the
-- idle_in_transaction_session_timeout), with the key above.
CREATE OR REPLACE FUNCTION pgmail_pop3_open(p_account bigint)
RETURNS TABLE (locked boolean, message_count bigint, used_bytes bigint, last_id bigint)
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(pgmail_mailbox_lock_key(p_account)) THEN
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
