SELECT a.address, count(*)
FROM mailbox b JOIN accounts a ON a.id = b.account_id
GROUP BY a.address ORDER BY a.address
