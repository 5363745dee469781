SELECT '[' || sender || ']', convert_from(substring(body for 16), 'UTF8') FROM messages
