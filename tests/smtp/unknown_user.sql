SELECT a.address FROM mailbox b JOIN accounts a ON a.id = b.account_id ORDER BY b.id
