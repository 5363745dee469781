SELECT (SELECT string_agg(id || ':' || size, ',' ORDER BY id) FROM mailbox),
 (SELECT count(*) FROM messages),
 (SELECT used_bytes FROM accounts WHERE address = 'alice@example.test')
