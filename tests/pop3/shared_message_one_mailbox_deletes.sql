SELECT a.address, count(b.id), a.used_bytes, (SELECT count(*) FROM messages)
FROM accounts a LEFT JOIN mailbox b ON b.account_id = a.id
WHERE a.address IN ('alice@example.test', 'bob@example.test')
GROUP BY a.address, a.used_bytes ORDER BY a.address
