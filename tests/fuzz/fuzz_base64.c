/*
 * fuzz_base64.c - the SASL base64 decoder: whatever it accepts re-encodes to the same
 * text, and what it produces fits the size it promises.
 */
#include "fuzz.h"
#include "base64.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    static unsigned char out[16384 / 4 * 3 + 1];
    static char again[16384 + 8];
    long n = base64_decode((const char *)data, size, out);
    if (n < 0)
        return 0;
    fuzz_check((size_t)n <= size / 4 * 3);
    size_t m = base64_encode(out, (size_t)n, again);
    fuzz_check(m == size && memcmp(again, data, size) == 0);
    return 0;
}
