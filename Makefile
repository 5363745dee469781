# pgmail - SMTP in, PostgreSQL store, POP3 out.
#   make          build the programs
#   make run      a local demo: PostgreSQL under .run/, SMTP on 127.0.0.1:2525
#   make test     unit, transcript and real-client tests (also under ASan/UBSan)
#   make install  PREFIX=/usr DESTDIR=...
#   make deb      the Debian package pgmail_VERSION_ARCH.deb (debian/, README.Debian)

PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= gcc
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Ishared -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
# libpq is linked from its static archives when they are here (Debian: libpq-dev and
# postgresql-server-dev-all, which make deps installs): libpq.so maps 24 more shared
# libraries (Kerberos, LDAP, SASL, GnuTLS, ...) into every handler, and that loading was
# most of a session's cost (tests/bench/README.md). shared/link/nogss.c stands in for the
# GSSAPI and LDAP functions libpq.a refers to. LIBPQ=shared links libpq.so instead.
# OpenSSL, libcrypt, libsystemd and libc stay shared so that Debian's security updates
# reach the handlers without a rebuild.
PG_PKGLIBDIR := $(shell pg_config --pkglibdir 2>/dev/null)
PG_LIBDIR    := $(shell pg_config --libdir 2>/dev/null)
PQ_ARCHIVES  := $(PG_LIBDIR)/libpq.a $(PG_PKGLIBDIR)/libpgcommon_shlib.a $(PG_PKGLIBDIR)/libpgport_shlib.a
LIBPQ        ?= $(if $(filter 3,$(words $(wildcard $(PQ_ARCHIVES)))),static,shared)
ifeq ($(LIBPQ),static)
LINK_OBJ      = $(BUILD)/shared/link/nogss.o
PQ_LINK       = $(LINK_OBJ) $(PQ_ARCHIVES)
else
PQ_LINK      := -lpq
endif
SYS_LIBS     := -lsystemd -lcrypt -lssl -lcrypto
LDLIBS       += $(PQ_LINK) $(SYS_LIBS)
SAN     ?=
BUILD   ?= build
ifneq ($(SAN),)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

SHARED_SRC := $(wildcard shared/*.c)
SMTP_SRC   := $(wildcard smtp/*.c)
POP3_SRC   := $(wildcard pop3/*.c)
ADMIN_SRC  := $(wildcard admin/*.c)
METRICS_SRC := $(wildcard metrics/*.c)
# relay/stub_net.c and relay/stub_dsn.c stand in for dns.c + client.c and dsn.c until those
# exist, and drop out by themselves then (delete them at that merge).
RELAY_SRC  := $(filter-out $(if $(wildcard relay/client.c),relay/stub_net.c) \
                           $(if $(wildcard relay/dsn.c),relay/stub_dsn.c),$(wildcard relay/*.c))
SHARED_OBJ := $(SHARED_SRC:%.c=$(BUILD)/%.o)
SMTP_OBJ   := $(SMTP_SRC:%.c=$(BUILD)/%.o)
POP3_OBJ   := $(POP3_SRC:%.c=$(BUILD)/%.o)
ADMIN_OBJ  := $(ADMIN_SRC:%.c=$(BUILD)/%.o) $(BUILD)/admin/migrations_gen.o
RELAY_OBJ  := $(RELAY_SRC:%.c=$(BUILD)/%.o)
METRICS_OBJ := $(METRICS_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC   := $(wildcard tests/unit/*.c)
UNIT_OBJ   := $(UNIT_SRC:%.c=$(BUILD)/%.o) $(BUILD)/smtp/address.o $(BUILD)/smtp/accounts.o $(BUILD)/relay/dsn.o
HEADERS    := $(wildcard shared/*.h smtp/*.h pop3/*.h admin/*.h relay/*.h metrics/*.h tests/unit/*.h)
MIGRATIONS := $(sort $(wildcard migrations/*.sql))

PROGRAMS := smtp/pgmail-smtpd pop3/pgmail-pop3d admin/pgmailctl relay/pgmail-relay \
            metrics/pgmail-metrics

.PHONY: all deps run test unit lint install clean format check-format image test-system deb \
        fuzz fuzz-build fuzz-quick soak bench bench-quick
all: $(PROGRAMS)

# Unit tests of the parsers: build/tests/unit/unit (and build-san/... under SAN=1).
unit: $(BUILD)/tests/unit/unit
$(BUILD)/tests/unit/unit: $(UNIT_OBJ) $(SHARED_OBJ) | $(LINK_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The default build writes the programs where the README and units expect them; a
# sanitizer build (SAN=1 BUILD=build-san) keeps its objects and programs under $(BUILD).
ifeq ($(BUILD),build)
BIN_PREFIX :=
else
BIN_PREFIX := $(BUILD)/
all: $(BIN_PREFIX)smtp/pgmail-smtpd $(BIN_PREFIX)pop3/pgmail-pop3d $(BIN_PREFIX)admin/pgmailctl \
     $(BIN_PREFIX)relay/pgmail-relay $(BIN_PREFIX)metrics/pgmail-metrics
endif

$(BUILD)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/admin/migrations_gen.c: $(MIGRATIONS) tests/lib/embed-sql.sh
	@mkdir -p $(dir $@)
	sh tests/lib/embed-sql.sh $(MIGRATIONS) > $@

$(BUILD)/admin/migrations_gen.o: $(BUILD)/admin/migrations_gen.c
	$(CC) $(CPPFLAGS) $(CFLAGS) -Iadmin -c -o $@ $<

$(BIN_PREFIX)smtp/pgmail-smtpd: $(SMTP_OBJ) $(SHARED_OBJ) | $(LINK_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN_PREFIX)pop3/pgmail-pop3d: $(POP3_OBJ) $(SHARED_OBJ) | $(LINK_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN_PREFIX)admin/pgmailctl: $(ADMIN_OBJ) $(SHARED_OBJ) | $(LINK_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN_PREFIX)metrics/pgmail-metrics: $(METRICS_OBJ) $(SHARED_OBJ) | $(LINK_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The relay alone resolves names (libunbound, relay/dns.c); the handlers do not link it.
$(BIN_PREFIX)relay/pgmail-relay: $(RELAY_OBJ) $(SHARED_OBJ) | $(LINK_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lunbound

# The targets that install packages first build in a second make, so that what the first
# one could not see yet (pg_config, libpq.a) is found.
# Debian packages this needs, installed with apt-get when missing (a fresh Debian 12 needs
# nothing else). Run as root, or have sudo.
DEPS := gcc make pkg-config libpq-dev postgresql-server-dev-all libsystemd-dev libcrypt-dev libssl-dev openssl \
        postgresql systemd \
        python3 curl swaks fetchmail pgbouncer clang-format clang-tidy cppcheck valgrind \
        clang libclang-rt-14-dev libnet-ssleay-perl \
        libunbound-dev unbound python3-aiosmtpd postfix prometheus fail2ban \
        rspamd opendkim opendkim-tools opendmarc python3-dkim
deps:
	@sh tests/lib/deps.sh $(DEPS)

# The Debian package (deploy/deb.sh, debian/): pgmail_VERSION_ARCH.deb at the top of the tree,
# checked with lintian. DEB_DEPS are debian/control's Build-Depends and the tools.
DEB_DEPS := dpkg-dev build-essential debhelper lintian pkg-config libpq-dev \
            postgresql-server-dev-all libsystemd-dev libcrypt-dev libssl-dev libunbound-dev
deb:
	@sh tests/lib/deps.sh $(DEB_DEPS)
	@sh deploy/deb.sh

run: deps
	@$(MAKE) --no-print-directory all
	@sh admin/demo.sh

test: deps
	@$(MAKE) --no-print-directory all unit
	@$(MAKE) --no-print-directory SAN=1 BUILD=build-san all unit
	@$(MAKE) --no-print-directory lint fuzz-build
	@python3 tests/run.py

install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/lib/systemd/system \
	    $(DESTDIR)$(PREFIX)/share/pgmail/migrations
	install -m 0755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/sbin/
	# The units name /usr/sbin; point them at where the programs really go.
	for u in units/*.socket units/*.service units/*.timer; do \
	    sed 's#/usr/sbin/#$(PREFIX)/sbin/#' $$u > $(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u); \
	    chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u); \
	done
	install -m 0644 $(MIGRATIONS) $(DESTDIR)$(PREFIX)/share/pgmail/migrations/
	install -d $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/man/man5
	for m in admin/man/*.8; do [ -f "$$m" ] && install -m 0644 $$m $(DESTDIR)$(PREFIX)/share/man/man8/ || true; done
	for m in admin/man/*.5; do [ -f "$$m" ] && install -m 0644 $$m $(DESTDIR)$(PREFIX)/share/man/man5/ || true; done
	# fail2ban's filter and a jail example, for the administrator to copy into /etc/fail2ban.
	install -d $(DESTDIR)$(PREFIX)/share/pgmail/fail2ban/filter.d $(DESTDIR)$(PREFIX)/share/pgmail/fail2ban/jail.d
	install -m 0644 deploy/fail2ban/filter.d/pgmail.conf $(DESTDIR)$(PREFIX)/share/pgmail/fail2ban/filter.d/
	install -m 0644 deploy/fail2ban/jail.d/pgmail.conf $(DESTDIR)$(PREFIX)/share/pgmail/fail2ban/jail.d/

# Container images (podman, no registry; see deploy/README.md) and the end-to-end test of
# the production path: real systemd, socket units, DynamicUser, credentials.
image:
	@sh deploy/image.sh

test-system:
	@sh deploy/test-system.sh

# Fuzzing with libFuzzer (clang), one target per input surface; see tests/fuzz/README.
# The session targets link tests/fuzz/memstore.c, an in-memory stand-in for the libpq
# functions that talk to a server, so the handlers' own code runs unchanged.
FUZZ_CC      ?= clang
FUZZ_BUILD   := build-fuzz
FUZZ_CFLAGS  := -g -O1 -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Ishared \
                -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql) \
                -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
FUZZ_TARGETS := smtp pop3 reader address base64 config reply dsn http milter
FUZZ_SECONDS ?= 600
FUZZ_SHARED  := $(SHARED_SRC:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_LIB     := $(FUZZ_BUILD)/tests/fuzz/memstore.o $(FUZZ_BUILD)/tests/fuzz/fuzzlib.o
FUZZ_SMTP    := $(filter-out $(FUZZ_BUILD)/smtp/main.o,$(SMTP_SRC:%.c=$(FUZZ_BUILD)/%.o))
FUZZ_POP3    := $(filter-out $(FUZZ_BUILD)/pop3/main.o,$(POP3_SRC:%.c=$(FUZZ_BUILD)/%.o))

$(FUZZ_BUILD)/%.o: %.c $(HEADERS) $(wildcard tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_BUILD)/fuzz_smtp: $(FUZZ_BUILD)/tests/fuzz/fuzz_smtp.o $(FUZZ_SMTP) $(FUZZ_SHARED) $(FUZZ_LIB)
$(FUZZ_BUILD)/fuzz_pop3: $(FUZZ_BUILD)/tests/fuzz/fuzz_pop3.o $(FUZZ_POP3) $(FUZZ_SHARED) $(FUZZ_LIB)
$(FUZZ_BUILD)/fuzz_reader: $(FUZZ_BUILD)/tests/fuzz/fuzz_reader.o $(FUZZ_SHARED)
$(FUZZ_BUILD)/fuzz_address: $(FUZZ_BUILD)/tests/fuzz/fuzz_address.o $(FUZZ_BUILD)/smtp/address.o $(FUZZ_SHARED)
$(FUZZ_BUILD)/fuzz_base64: $(FUZZ_BUILD)/tests/fuzz/fuzz_base64.o $(FUZZ_SHARED)
$(FUZZ_BUILD)/fuzz_config: $(FUZZ_BUILD)/tests/fuzz/fuzz_config.o $(FUZZ_SHARED)
$(FUZZ_BUILD)/fuzz_reply: $(FUZZ_BUILD)/tests/fuzz/fuzz_reply.o $(FUZZ_BUILD)/relay/reply.o $(FUZZ_SHARED)
$(FUZZ_BUILD)/fuzz_dsn: $(FUZZ_BUILD)/tests/fuzz/fuzz_dsn.o $(FUZZ_BUILD)/relay/dsn.o
$(FUZZ_BUILD)/fuzz_http: $(FUZZ_BUILD)/tests/fuzz/fuzz_http.o $(FUZZ_BUILD)/metrics/request.o \
                         $(FUZZ_BUILD)/metrics/expose.o $(FUZZ_SHARED)
$(FUZZ_BUILD)/fuzz_milter: $(FUZZ_BUILD)/tests/fuzz/fuzz_milter.o $(FUZZ_BUILD)/smtp/milter_proto.o \
                           $(FUZZ_BUILD)/smtp/headers.o
$(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%):
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $@ $^ -lpq $(SYS_LIBS)

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

# make fuzz FUZZ_SECONDS=3600: each target for that long (new inputs kept in .run/fuzz/).
fuzz: deps fuzz-build
	@sh tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The short form that make test runs: every target briefly, from the committed seeds.
fuzz-quick: fuzz-build
	@sh tests/fuzz/run.sh 15 $(FUZZ_TARGETS)

# Load and soak (loopback only, bounded): parallel SMTP and POP3 sessions and a slowloris;
# acknowledged = stored, nothing left behind. make soak SOAK_MINUTES=10 for longer.
SOAK_MINUTES ?= 3
soak: deps
	@$(MAKE) --no-print-directory all
	@python3 tests/soak/soak.py --minutes $(SOAK_MINUTES)

# Benchmarks against Postfix and Dovecot on this machine (tests/bench/bench.py says how), then
# outbound against Postfix relaying (tests/bench/outbound.py), STARTTLS sessions with and
# without TLS session resumption (tests/bench/tls.py), then SMTP with rspamd as the milter
# of both (tests/bench/milter.py).
bench: deps
	@$(MAKE) --no-print-directory all
	@python3 tests/bench/bench.py
	@python3 tests/bench/outbound.py
	@python3 tests/bench/tls.py
	@python3 tests/bench/milter.py

bench-quick: deps
	@$(MAKE) --no-print-directory all
	@python3 tests/bench/bench.py --quick
	@python3 tests/bench/outbound.py --quick
	@python3 tests/bench/tls.py --quick
	@python3 tests/bench/milter.py --quick

# Static analysis; both must report nothing (configuration in .clang-tidy).
lint:
	cppcheck --enable=warning,performance,portability --inline-suppr --error-exitcode=1 -q \
	    -D_GNU_SOURCE -Ishared -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql) \
	    shared smtp pop3 admin relay metrics tests/unit
	clang-tidy -quiet $(SHARED_SRC) $(SMTP_SRC) $(POP3_SRC) $(ADMIN_SRC) $(RELAY_SRC) $(METRICS_SRC) -- -std=c17 -D_GNU_SOURCE \
	    -Ishared -Iadmin -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
	@echo "lint: cppcheck and clang-tidy found nothing"

format:
	clang-format -i $(SHARED_SRC) shared/link/nogss.c $(SMTP_SRC) $(POP3_SRC) $(ADMIN_SRC) $(RELAY_SRC) $(METRICS_SRC) $(UNIT_SRC) $(HEADERS)

check-format:
	clang-format --dry-run --Werror $(SHARED_SRC) shared/link/nogss.c $(SMTP_SRC) $(POP3_SRC) $(ADMIN_SRC) $(RELAY_SRC) $(METRICS_SRC) $(UNIT_SRC) $(HEADERS)

clean:
	rm -rf build build-san build-fuzz $(PROGRAMS)
