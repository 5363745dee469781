-- 001_initial.sql - pgmail's first schema: domains, accounts, aliases, messages, mailboxes.
--
-- Applied once, inside a transaction, by `pgmailctl migrate`, which records it in
-- pgmail_migrations. Designed for SMTP delivery and POP3 retrieval alike:
--  * addresses match case-insensitively: every unique index is on lower(...);
--  * a message's bytes are stored once per accepted transaction (messages), however many
--    local recipients it has; each recipient gets one mailbox row pointing at it;
--  * a mailbox row's id is its POP3 UIDL: a bigserial, so unique and never reused;
--  * a mailbox's count and total size come from mailbox rows alone (size is stored there),
--    never from message bodies; accounts.used_bytes keeps the running total for quotas.

CREATE TABLE domains (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL CHECK (name <> '' AND length(name) <= 255),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX domains_name_key ON domains (lower(name));

CREATE TABLE accounts (
    id            bigserial PRIMARY KEY,
    domain_id     bigint NOT NULL REFERENCES domains (id) ON DELETE RESTRICT,
    address       text NOT NULL CHECK (position('@' in address) > 1),
    password_hash text NOT NULL,
    quota_bytes   bigint CHECK (quota_bytes IS NULL OR quota_bytes >= 0),
    used_bytes    bigint NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX accounts_address_key ON accounts (lower(address));
CREATE INDEX accounts_domain_idx ON accounts (domain_id);

-- An alias delivers to one or more local accounts (one row per target).
CREATE TABLE aliases (
    id         bigserial PRIMARY KEY,
    domain_id  bigint NOT NULL REFERENCES domains (id) ON DELETE RESTRICT,
    address    text NOT NULL CHECK (position('@' in address) > 1),
    account_id bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX aliases_address_target_key ON aliases (lower(address), account_id);
CREATE INDEX aliases_account_idx ON aliases (account_id);

-- One row per accepted transaction (or per bounce). body holds the message as retrieved:
-- CRLF line ends, dot-unstuffed, with Return-Path: and Received: prepended.
CREATE TABLE messages (
    id          bigserial PRIMARY KEY,
    sender      text NOT NULL,          -- envelope MAIL FROM, '' for the null sender
    received_at timestamptz NOT NULL DEFAULT now(),
    size        bigint NOT NULL CHECK (size = octet_length(body)),
    session_id  text NOT NULL,
    body        bytea NOT NULL
);
-- Bodies are large and read in slices by POP3: no compression, so substring() can fetch a
-- slice without detoasting the whole value.
ALTER TABLE messages ALTER COLUMN body SET STORAGE EXTERNAL;

CREATE TABLE mailbox (
    id          bigserial PRIMARY KEY,  -- the POP3 unique id
    account_id  bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    message_id  bigint NOT NULL REFERENCES messages (id) ON DELETE RESTRICT,
    size        bigint NOT NULL,        -- octets as retrieved (= messages.size)
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mailbox_account_idx ON mailbox (account_id, id) INCLUDE (size);
CREATE INDEX mailbox_message_idx ON mailbox (message_id);
