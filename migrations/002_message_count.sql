-- 002_message_count.sql - accounts.message_count beside accounts.used_bytes.
--
-- Why: a POP3 login answers "n messages (m octets)" and STAT. Reading the whole mailbox
-- list for that made every login cost as much as the mailbox is long (a 100,000-message
-- mailbox took ~20 times the CPU of a 10-message one). With both totals on the account row
-- the login reads one row; the list is read only when a command needs message numbers
-- (LIST, UIDL, RETR, TOP, DELE).
--
-- Every statement that adds or removes mailbox rows updates both totals in the same
-- statement: smtp/ (delivery, bounce), pop3/ (QUIT) and pgmailctl (purge). The backfill
-- below also sets used_bytes from what the mailboxes hold, so both start out exact.
-- (001's note that a mailbox's count comes from its rows alone is superseded here.)
-- Upgrade the programs together with this migration: an older pgmail-smtpd still running
-- afterwards would not count what it delivers. Nothing is lost then: a POP3 session that
-- numbers messages reads the rows, which win over the totals (and logs the mismatch).
ALTER TABLE accounts
    ADD COLUMN message_count bigint NOT NULL DEFAULT 0 CHECK (message_count >= 0);

UPDATE accounts a
   SET message_count = (SELECT count(*) FROM mailbox b WHERE b.account_id = a.id),
       used_bytes = (SELECT coalesce(sum(size), 0) FROM mailbox b WHERE b.account_id = a.id);
