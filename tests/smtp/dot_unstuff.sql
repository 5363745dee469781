SELECT convert_from(substring(body from position('Subject: dots'::bytea in body)), 'UTF8')
FROM messages
