SELECT a.address, m.sender, m.size = octet_length(m.body), b.size = m.size,
       convert_from(m.body, 'UTF8')
FROM mailbox b JOIN messages m ON m.id = b.message_id JOIN accounts a ON a.id = b.account_id
ORDER BY b.id
