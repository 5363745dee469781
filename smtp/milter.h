/*
 * milter.h - the mail filter ("milter") protocol as pgmail-smtpd speaks it (Sendmail's
 * protocol version 6, as Postfix's milter8 client speaks it), and the header section that
 * milters read and edit.
 *
 * Three layers, one file each: milter_proto.c parses what a milter sends (pure, no I/O:
 * a fuzz target), headers.c keeps a message's header section (bounded) and applies the
 * edits, milter.c talks to the milters of one session (milter_conn: connect, negotiate,
 * one event to all of them, verdicts). smtpd.h has the session's side of it.
 */
#ifndef PGMAIL_SMTP_MILTER_H
#define PGMAIL_SMTP_MILTER_H

#include <stddef.h>
#include <stdint.h>

#include "mail_limits.h"

/* Commands of the MTA (one octet after the length of each packet). */
#define SMFIC_ABORT   'A'
#define SMFIC_BODY    'B'
#define SMFIC_CONNECT 'C'
#define SMFIC_MACRO   'D'
#define SMFIC_BODYEOB 'E'
#define SMFIC_HELO    'H'
#define SMFIC_HEADER  'L'
#define SMFIC_MAIL    'M'
#define SMFIC_EOH     'N'
#define SMFIC_OPTNEG  'O'
#define SMFIC_QUIT    'Q'
#define SMFIC_RCPT    'R'
#define SMFIC_DATA    'T'

/* Actions a milter may take at the end of a message (SMFIF_*). pgmail offers the header
 * edits, and quarantine because OpenDMARC refuses to work without it being offered (its
 * libmilter closes the connection); pgmail has no hold queue, so a quarantine request is
 * logged and the message delivered. Body replacement and recipient and sender changes are
 * declined at negotiation, and a request for one of them is ignored and logged. */
#define SMFIF_ADDHDRS    0x001u
#define SMFIF_CHGBODY    0x002u
#define SMFIF_ADDRCPT    0x004u
#define SMFIF_DELRCPT    0x008u
#define SMFIF_CHGHDRS    0x010u
#define SMFIF_QUARANTINE 0x020u
#define MILTER_ACTIONS   (SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_QUARANTINE)

/* Protocol steps (SMFIP_*): the events a milter does not want (NO*), those it sends no
 * reply to (NR_*), SKIP (the MTA understands SMFIR_SKIP) and HDR_LEADSPC (header values
 * are sent with their leading space). pgmail offers every one of these. */
#define SMFIP_NOCONNECT   0x000001u
#define SMFIP_NOHELO      0x000002u
#define SMFIP_NOMAIL      0x000004u
#define SMFIP_NORCPT      0x000008u
#define SMFIP_NOBODY      0x000010u
#define SMFIP_NOHDRS      0x000020u
#define SMFIP_NOEOH       0x000040u
#define SMFIP_NR_HDR      0x000080u
#define SMFIP_NOUNKNOWN   0x000100u
#define SMFIP_NODATA      0x000200u
#define SMFIP_SKIP        0x000400u
#define SMFIP_NR_CONN     0x001000u
#define SMFIP_NR_HELO     0x002000u
#define SMFIP_NR_MAIL     0x004000u
#define SMFIP_NR_RCPT     0x008000u
#define SMFIP_NR_DATA     0x010000u
#define SMFIP_NR_UNKN     0x020000u
#define SMFIP_NR_EOH      0x040000u
#define SMFIP_NR_BODY     0x080000u
#define SMFIP_HDR_LEADSPC 0x100000u
#define MILTER_STEPS      0x1ff7ffu /* all of the above */
#define MILTER_VERSION    6

/* What a milter's packet is. */
enum milter_kind {
    MK_CONTINUE,    /* c: go on */
    MK_ACCEPT,      /* a: this milter is done (with the session at connect and HELO, else
                       with the message) and accepts */
    MK_REJECT,      /* r */
    MK_TEMPFAIL,    /* t */
    MK_DISCARD,     /* d: 250, and the message is dropped */
    MK_REPLY,       /* y: reject or tempfail with the milter's own reply (text) */
    MK_PROGRESS,    /* p: still working: the timeout starts again */
    MK_SKIP,        /* s: no more body chunks for this milter */
    MK_ADDHEADER,   /* h: name, value */
    MK_INSHEADER,   /* i: index, name, value */
    MK_CHGHEADER,   /* m: index, name, value ("" deletes) */
    MK_OPTNEG,      /* O: version, actions, protocol */
    MK_UNSUPPORTED, /* a known request that pgmail declines (body, recipients, quarantine) */
};

struct milter_reply {
    enum milter_kind kind;
    char cmd;                            /* the packet's command octet */
    uint32_t index;                      /* MK_INSHEADER, MK_CHGHEADER */
    const char *name;                    /* MK_*HEADER: NUL-terminated, inside the packet */
    const char *value;                   /* MK_*HEADER: NUL-terminated, inside the packet */
    uint32_t version, actions, protocol; /* MK_OPTNEG */
    int temporary;                       /* MK_REPLY: a 4xx reply */
    char text[LIM_MILTER_REPLY + 1];     /* MK_REPLY: lines joined by CRLF, no final CRLF */
};

/* milter_parse: the packet pkt[0..len) (its command octet and data, after the length) into
 * *r. Returns 0, or -1 when it is not a well-formed reply of the protocol: an unknown
 * command, missing NULs, a header name that is not one (RFC 5322 2.2: printable, no colon),
 * a header value whose line breaks are not folds (a break must be followed by a space or a
 * tab: anything else would let a milter write a new header field or end the section), or
 * a custom reply that is not a 4xx/5xx SMTP reply (RFC 5321 4.2: one code on every line,
 * '-' after it on all but the last, printable text). */
int milter_parse(const char *pkt, size_t len, struct milter_reply *r);

/* ---- a message's header section (headers.c) */
struct hdr_field {
    size_t off, len; /* in hdrs.buf: the whole field, name to the final CRLF */
    size_t namelen;  /* the name's length; the colon follows it */
};

struct hdrs {
    char *buf; /* the fields' text; edits append theirs after the client's */
    size_t len, cap;
    struct hdr_field *f; /* the fields in order */
    size_t n, fcap;
};

/* hdrs_init: an empty section with room for cap octets of text. 0, or -1 out of memory. */
int hdrs_init(struct hdrs *h, size_t cap);
void hdrs_free(struct hdrs *h);

/* hdrs_field_start: 1 when p[0..n), the start of a line, begins a header field ("name:",
 * RFC 5322 2.2), 0 when it is something else (the section ends there). */
int hdrs_field_start(const char *p, size_t n);

/* hdrs_append: append p[0..n) of the client's header section (CRLF line ends), as a new
 * field or as the continuation of the last one. -1 when it does not fit. */
int hdrs_append(struct hdrs *h, const char *p, size_t n, int new_field);

/* hdrs_drop_claims: remove every Authentication-Results field whose authserv-id is ours
 * (RFC 8601 5: a verdict from outside must not pass for our own). Returns how many. */
size_t hdrs_drop_claims(struct hdrs *h, const char *authserv_id);

/* hdrs_value: field i's value as milters read it: without its name, colon and final CRLF,
 * folds as LF (Sendmail's internal form), and without the one leading space unless leadspc.
 * Into out (cap octets, NUL-terminated); returns its length. */
size_t hdrs_value(const struct hdrs *h, size_t i, char *out, size_t cap, int leadspc);

/* The edits of SMFIR_ADDHEADER, _INSHEADER and _CHGHEADER, as libmilter documents them and
 * Postfix applies them: add appends; insert puts the field before field index (0 = the
 * top, past the end = appended); change replaces the index-th (from 1; 0 counts as 1)
 * field of that name, deletes it when value is empty, and appends the field when there
 * is no such one. value comes as the milter sent it (LF or CRLF folds; with its leading
 * space when leadspc). 0, or -1 when the room for edits is used up. */
int hdrs_add(struct hdrs *h, const char *name, const char *value, int leadspc);
int hdrs_insert(struct hdrs *h, size_t index, const char *name, const char *value, int leadspc);
int hdrs_change(struct hdrs *h, size_t index, const char *name, const char *value, int leadspc);

/* hdrs_size: the octets of the section as stored (the fields in order). */
size_t hdrs_size(const struct hdrs *h);

#endif
