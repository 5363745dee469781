-- 012_auth_failures.sql - failed logins kept for a sliding window, shared by every handler
-- process and every handler host (issue 15, part 4).
--
-- Why: a handler is one process per connection and forgets everything at exit, so its
-- limit of LIM_AUTH_FAILURES tries per connection resets when the client reconnects. The
-- database is the one place every process and host sees, so the failures live here.
--
-- One row per failed login: the source (the client's IPv4 address, or its IPv6 /64: one
-- host usually holds a whole /64), the login as typed, lower-cased (unknown names are
-- recorded exactly like accounts, so this table never tells whether an account exists),
-- the program and the time. shared/auth.c reads the counts in the window with the account
-- lookup it already made (no extra statement) and adds a row with pgmail_auth_failure (the
-- one statement a failure already cost: it replaces pgmail_count_login_failure).
--
-- One record of a failed login: the login_failures counter of migrations/010 is kept from
-- these rows by a trigger, as every other counter is kept from its event's rows; the rows
-- themselves are pruned once they are out of the window, the counter never goes down.
-- pgmail_count_login_failure stays for handlers of the previous release during an upgrade.
--
-- Works behind PgBouncer in transaction mode: plain statements, no session state.

SET LOCAL lock_timeout = '10s';

CREATE TABLE auth_failures (
    source  text NOT NULL,               -- address, or IPv6 network/64 (shared/auth.c)
    login   text NOT NULL,               -- lower(login as typed), '' for a malformed one
    service text NOT NULL,               -- pgmail-smtpd, pgmail-pop3d
    at      timestamptz NOT NULL DEFAULT now()
);

-- The two counts of the lookup (by source, by login, within the window) and the pruning.
CREATE INDEX auth_failures_source_idx ON auth_failures (source, at);
CREATE INDEX auth_failures_login_idx ON auth_failures (login, at);
CREATE INDEX auth_failures_at_idx ON auth_failures (at);

-- The login_failures counter (migrations/010), by service, from the rows inserted.
CREATE FUNCTION pgmail_count_auth_failures() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgmail_count_add(array_agg('login_failures'::text), array_agg(left(t.service, 64)),
                             array_agg(t.n))
       FROM (SELECT r.service, count(*) AS n FROM new_rows r GROUP BY r.service) t;
    RETURN NULL;
END
$$;

CREATE TRIGGER auth_failures_count AFTER INSERT ON auth_failures
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pgmail_count_auth_failures();

-- pgmail_auth_failure: record one failed login, and prune up to 16 rows older than the
-- window (p_window seconds), so that the table holds about one window of failures without
-- a timer (each failure removes more than it adds; rows another session is pruning are
-- skipped, so concurrent failures never wait on each other).
CREATE FUNCTION pgmail_auth_failure(p_service text, p_source text, p_login text,
                                    p_window double precision)
RETURNS void
LANGUAGE sql AS $$
    WITH old AS (SELECT ctid FROM auth_failures
                  WHERE at < now() - make_interval(secs => p_window)
                  ORDER BY at LIMIT 16 FOR UPDATE SKIP LOCKED)
    DELETE FROM auth_failures f USING old WHERE f.ctid = old.ctid;
    INSERT INTO auth_failures (source, login, service)
    VALUES (p_source, lower(p_login), left(p_service, 64));
$$;
