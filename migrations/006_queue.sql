-- 006_queue.sql - the outbound queue: one row per remote recipient of a message, worked by
-- pgmail-relay; the message's bytes stay in messages, stored once.
--
-- Why in PostgreSQL: the queue is then as durable as the mail store (a message and all its
-- recipients, local and remote, are committed in one transaction before the 250), several
-- relays on several hosts share it safely (FOR UPDATE SKIP LOCKED plus a lease), and an
-- operator reads it with SQL as well as with pgmailctl queue.
--
-- A queue row's life: queued (new) -> deferred (a temporary failure; next_attempt says when
-- again) -> delivered or bounced (finished, kept LIM_QUEUE_HISTORY_DAYS as history). held
-- rows wait for pgmailctl queue release. A row is being worked while lease_until lies in
-- the future: no other relay takes it then; a relay that dies leaves its lease to expire.
-- dsn names a delivery status notification still to be written for the row ('failed':
-- a bounce; 'delayed': a delay warning); pgmail-relay writes them and sets it back to NULL.

SET LOCAL lock_timeout = '10s';

-- The remote recipients a message was accepted for (its queue rows are written with it,
-- by its insert trigger: migrations/007) and the authenticated account that sent it (the
-- per-account outbound limit counts its queue rows).
ALTER TABLE messages ADD COLUMN relay_to text[]
    CONSTRAINT messages_relay_to_check CHECK (cardinality(relay_to) > 0);
ALTER TABLE messages ADD COLUMN submitted_by bigint;

-- Remote recipients per hour for this account: NULL takes max_outbound_per_hour from the
-- configuration, -1 means no limit (pgmailctl user limit ADDRESS N|none|default).
ALTER TABLE accounts ADD COLUMN outbound_limit integer
    CONSTRAINT accounts_outbound_limit_check CHECK (outbound_limit >= -1);

CREATE TABLE queue (
    id           bigserial PRIMARY KEY,
    -- The message (messages.id), which is also the queue id an operator sees. Not a
    -- foreign key: the messages row is removed once no mailbox row and no unfinished queue
    -- row needs it, and the finished rows stay behind as history.
    message_id   bigint NOT NULL,
    sender       text NOT NULL,                 -- envelope MAIL FROM, '' for the null sender
    recipient    text NOT NULL CHECK (position('@' in recipient) > 1),
    domain       text NOT NULL,                 -- lower-case domain of recipient: the destination
    account_id   bigint,                        -- the submitting account (outbound limit)
    state        text NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'deferred', 'held', 'delivered', 'bounced')),
    attempts     integer NOT NULL DEFAULT 0,
    arrived_at   timestamptz NOT NULL DEFAULT now(),
    next_attempt timestamptz NOT NULL DEFAULT now(),
    lease_owner  text,                          -- "host:pid" of the relay working the row
    lease_until  timestamptz,
    dsn          text CHECK (dsn IN ('failed', 'delayed')),
    warned       boolean NOT NULL DEFAULT false, -- a delay warning was written
    -- The last attempt: the remote reply (code, enhanced code, text), where, and how.
    last_attempt timestamptz,
    last_code    integer,
    last_status  text,                          -- enhanced status code, "5.1.1"
    last_reply   text,
    last_host    text,
    last_address text,
    last_tls     text,                          -- "TLSv1.3 TLS_AES_256_GCM_SHA384", NULL in clear
    finished_at  timestamptz,
    CHECK ((state IN ('delivered', 'bounced')) = (finished_at IS NOT NULL))
);
-- What pgmail-relay asks most: due work, and work by destination.
CREATE INDEX queue_due_idx ON queue (next_attempt) WHERE state IN ('queued', 'deferred');
CREATE INDEX queue_domain_idx ON queue (domain, next_attempt) WHERE state IN ('queued', 'deferred');
CREATE INDEX queue_message_idx ON queue (message_id);
CREATE INDEX queue_account_idx ON queue (account_id, arrived_at) WHERE account_id IS NOT NULL;
CREATE INDEX queue_dsn_idx ON queue (message_id) WHERE dsn IS NOT NULL;
CREATE INDEX queue_finished_idx ON queue (finished_at) WHERE finished_at IS NOT NULL;

-- Every attempt of every recipient (pgmailctl queue show), removed with its row.
CREATE TABLE queue_attempts (
    id        bigserial PRIMARY KEY,
    queue_id  bigint NOT NULL REFERENCES queue (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    outcome   text NOT NULL CHECK (outcome IN ('delivered', 'deferred', 'bounced')),
    code      integer,
    status    text,
    reply     text,
    host      text,
    address   text,
    tls       text
);
CREATE INDEX queue_attempts_queue_idx ON queue_attempts (queue_id, id);

-- Whether messages row p_message is still needed: by a mailbox row, or by a queue row that
-- is unfinished or still owes a DSN (which quotes the message's headers). Every remover of
-- messages rows (POP3 QUIT, pgmailctl user del and check, pgmail-relay) asks this after
-- locking the row, in a statement of its own (see pgmail-pop3d's SQL_LOCK_MESSAGES).
CREATE FUNCTION pgmail_message_needed(p_message bigint)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT FROM mailbox b WHERE b.message_id = p_message)
        OR EXISTS (SELECT FROM queue q WHERE q.message_id = p_message
                      AND (q.state IN ('queued', 'deferred', 'held') OR q.dsn IS NOT NULL))
$$;

-- pgmail-relay LISTENs on channel pgmail_queue: a row that is due now (new, flushed,
-- released, taken back from a relay) or owes a DSN wakes it at once. One notification per
-- transaction (PostgreSQL folds equal ones), whatever the number of rows.
CREATE FUNCTION pgmail_queue_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgmail_queue', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER queue_notify AFTER INSERT OR UPDATE ON queue
    FOR EACH ROW
    WHEN ((NEW.state IN ('queued', 'deferred') AND NEW.next_attempt <= now()
           AND NEW.lease_until IS NULL)
          OR NEW.dsn IS NOT NULL)
    EXECUTE FUNCTION pgmail_queue_notify();
