SELECT m.id, m.sender, string_agg(a.address, ',' ORDER BY a.address)
FROM mailbox b JOIN messages m ON m.id = b.message_id JOIN accounts a ON a.id = b.account_id
GROUP BY m.id, m.sender ORDER BY m.id
