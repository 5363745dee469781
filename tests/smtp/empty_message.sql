SELECT count(*), bool_and(convert_from(body, 'UTF8') LIKE 'Return-Path: <sender@remote.example>' || E'\r\n' || 'Received: %'
    AND convert_from(body, 'UTF8') LIKE '%' || E'\r\n'),
    bool_and(size = octet_length(body))
FROM messages
