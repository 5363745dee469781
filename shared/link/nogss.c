/*
 * nogss.c - stand-ins for the GSSAPI and LDAP functions that libpq.a refers to.
 *
 * Why: Debian's libpq is built with GSSAPI and LDAP support, so linking its static
 * archive (libpq.a) needs them, and Debian ships no static Kerberos or LDAP libraries.
 * Linking libpq.so instead maps 24 shared libraries (krb5, ldap, sasl, gnutls, ...) into
 * every handler, which is most of what starting a session costs (tests/bench/README.md).
 * pgmail connects to PostgreSQL (or PgBouncer) over a Unix socket or TCP with password,
 * trust, peer or TLS authentication; it never uses Kerberos nor an LDAP service lookup.
 *
 * What happens instead: every GSSAPI call reports GSS_S_FAILURE, so libpq finds no
 * Kerberos credentials, skips GSS encryption (gssencmode=prefer, the default) and, if a
 * server asks for GSS authentication, fails the connection with a clear libpq error
 * ("could not initiate GSSAPI security context"). ldap_init returns NULL, so an
 * ldap:// line in a service file fails with "could not create LDAP structure".
 *
 * The prototypes are deliberately loose: the callers were compiled against the real
 * headers, which Debian does not install with libpq-dev, and on x86-64 and arm64 a
 * function that ignores its arguments and returns an integer or a pointer in the first
 * return register is called correctly whatever the caller passes.
 */
#include <stddef.h>
#include <stdint.h>

#define GSS_FAILURE  (13u << 16) /* GSS_S_FAILURE: a routine error, RFC 2744 3.9.1 */
#define LDAP_FAILURE 0x50        /* LDAP_OTHER */

/* The OID constant libpq passes to gss_import_name: never dereferenced by the stubs. */
void *GSS_C_NT_HOSTBASED_SERVICE = NULL;

#define GSS(name)                                                                                  \
    uint32_t name(void);                                                                           \
    uint32_t name(void)                                                                            \
    {                                                                                              \
        return GSS_FAILURE;                                                                        \
    }
#define LDAP_INT(name)                                                                             \
    int name(void);                                                                                \
    int name(void)                                                                                 \
    {                                                                                              \
        return LDAP_FAILURE;                                                                       \
    }

GSS(gss_acquire_cred)
GSS(gss_delete_sec_context)
GSS(gss_display_status)
GSS(gss_import_name)
GSS(gss_init_sec_context)
GSS(gss_release_buffer)
GSS(gss_release_cred)
GSS(gss_release_name)
GSS(gss_unwrap)
GSS(gss_wrap)
GSS(gss_wrap_size_limit)

void *ldap_init(void);
void *ldap_init(void)
{
    return NULL;
}
const char *ldap_err2string(void);
const char *ldap_err2string(void)
{
    return "LDAP is not supported by this build of pgmail";
}
void *ldap_first_entry(void);
void *ldap_first_entry(void)
{
    return NULL;
}
void *ldap_get_values_len(void);
void *ldap_get_values_len(void)
{
    return NULL;
}
LDAP_INT(ldap_count_entries)
LDAP_INT(ldap_msgfree)
LDAP_INT(ldap_result)
LDAP_INT(ldap_search_st)
LDAP_INT(ldap_set_option)
LDAP_INT(ldap_simple_bind)
LDAP_INT(ldap_unbind)
LDAP_INT(ldap_value_free_len)
