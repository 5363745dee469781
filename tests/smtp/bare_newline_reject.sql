SELECT convert_from(substring(body from position('Subject:'::bytea in body)), 'UTF8')
FROM messages
