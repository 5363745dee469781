/*
 * fuzz_address.c - MAIL/RCPT paths and ESMTP parameters, and the lookup keys made from
 * them. Checked: an accepted path is at most LIM_PATH octets, printable, holds an '@'
 * (or is empty where allowed), and its lookup key is no longer than it.
 */
#include "fuzz.h"
#include "../../smtp/smtpd.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 4096)
        return 0;
    char arg[4097], out[LIM_PATH + 1], *params, *key, *value;
    memcpy(arg, data + 1, size - 1);
    arg[size - 1] = '\0';
    int null_ok = data[0] & 1;
    if (smtp_parse_path(arg, null_ok, out, sizeof out, &params) == 0) {
        size_t n = strlen(out);
        fuzz_check(n <= LIM_PATH && (n > 0 || null_ok));
        for (size_t i = 0; i < n; i++)
            fuzz_check((unsigned char)out[i] > 0x20 || out[i] == ' ');
        fuzz_check(n == 0 || strchr(out, '@'));
        static struct smtp_session s;
        strcpy(s.cfg.recipient_delimiter, data[0] & 2 ? "+-" : "+");
        char k[LIM_PATH + 1];
        const char *domain;
        smtp_lookup_key(&s, out, data[0] & 4, k, sizeof k, &domain);
        fuzz_check(strlen(k) <= n && domain >= k && domain <= k + strlen(k));
        int count = 0;
        while (smtp_param_next(&params, &key, &value))
            fuzz_check(++count <= 4096 && !strchr(key, ' ') && !strchr(key, '='));
    }
    return 0;
}
