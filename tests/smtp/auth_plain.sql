SELECT a.address, m.sender FROM mailbox b JOIN messages m ON m.id = b.message_id
JOIN accounts a ON a.id = b.account_id
UNION ALL SELECT q.recipient || ' ' || q.domain || ' ' || q.state, q.sender FROM queue q
