-- 011: a message's header section may arrive after its body (pgmail-smtpd with milters).
--
-- Milters change the header section only at the end of the message, when pgmail-smtpd has
-- already streamed the body into the row's COPY (its memory must not grow with the
-- message). So the COPY then carries the section last, in the column head, and this
-- trigger puts it in front of the body before anything else sees the row: the delivery
-- trigger (AFTER INSERT), the size check, POP3, the relay. A stored message is one body as
-- before, so sizes, UIDLs and existing mail stay exactly as they are; head is never
-- stored (the CHECK says so).
ALTER TABLE messages ADD COLUMN head bytea CHECK (head IS NULL);

CREATE FUNCTION pgmail_head_first() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.body := NEW.head || NEW.body;
    NEW.head := NULL;
    RETURN NEW;
END
$$;

CREATE TRIGGER messages_head_first BEFORE INSERT ON messages
    FOR EACH ROW WHEN (NEW.head IS NOT NULL) EXECUTE FUNCTION pgmail_head_first();
