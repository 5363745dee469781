SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM mailbox)
