# snstack. `make demo` sets up a fresh Debian 12 machine and runs the main job; `make test` runs
# every test. All real work lives in ci/*.sh so CI and people run the same thing.
.PHONY: all build demo test bench clean install uninstall

all: build

build:
	cargo build --release --workspace

demo:
	bash ci/demo.sh

test:
	bash ci/test.sh

# make bench            full run (about 20 minutes on 2 cores), bench/results/<timestamp>/
# make bench QUICK=1    quick profile (under 5 minutes with the build)
QUICK ?= 0
bench:
	QUICK=$(QUICK) BENCH_COMMAND="make bench$(if $(filter 1,$(QUICK)), QUICK=1,)" bash ci/bench.sh

clean:
	cargo clean

# make install [PREFIX=/usr/local] [DESTDIR=] [SYSCONFDIR=...] [SYSTEMDUNITDIR=...]
# PREFIX/bin/{snstack,snstack-agent}, PREFIX/lib/snstack/libsnstack.so (found by `snstack` from
# its own place), the systemd unit and SYSCONFDIR/snstack/agent.conf (kept when it exists: the
# new template goes beside it as agent.conf.new). Builds first only if target/release lacks a
# binary, so `make build && sudo make install` runs no cargo as root.
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
BINDIR := $(PREFIX)/bin
PKGLIBDIR := $(PREFIX)/lib/snstack
RELEASE := target/release
ARTEFACTS := $(RELEASE)/snstack $(RELEASE)/snstack-agent $(RELEASE)/libsnstack.so

$(ARTEFACTS):
	cargo build --release --workspace

install: $(ARTEFACTS)
	install -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(PKGLIBDIR)" "$(DESTDIR)$(SYSCONFDIR)/snstack" \
		"$(DESTDIR)$(SYSTEMDUNITDIR)"
	install -m 0755 $(RELEASE)/snstack $(RELEASE)/snstack-agent "$(DESTDIR)$(BINDIR)/"
	install -m 0644 $(RELEASE)/libsnstack.so "$(DESTDIR)$(PKGLIBDIR)/libsnstack.so"
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' etc/snstack-agent.service.in \
		>"$(DESTDIR)$(SYSTEMDUNITDIR)/snstack-agent.service.tmp"
	mv "$(DESTDIR)$(SYSTEMDUNITDIR)/snstack-agent.service.tmp" "$(DESTDIR)$(SYSTEMDUNITDIR)/snstack-agent.service"
	chmod 0644 "$(DESTDIR)$(SYSTEMDUNITDIR)/snstack-agent.service"
	@conf="$(DESTDIR)$(SYSCONFDIR)/snstack/agent.conf"; \
	if [ -e "$$conf" ] && ! cmp -s etc/agent.conf "$$conf"; then \
		install -m 0644 etc/agent.conf "$$conf.new"; \
		echo "kept $$conf (yours); the new template is $$conf.new"; \
	else \
		install -m 0644 etc/agent.conf "$$conf"; \
	fi
	@echo "installed under $(DESTDIR)$(PREFIX); service: systemctl daemon-reload && systemctl enable --now snstack-agent"

# Removes what `install` put in place except a configuration file that was edited.
uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/snstack" "$(DESTDIR)$(BINDIR)/snstack-agent" \
		"$(DESTDIR)$(PKGLIBDIR)/libsnstack.so" "$(DESTDIR)$(SYSTEMDUNITDIR)/snstack-agent.service" \
		"$(DESTDIR)$(SYSCONFDIR)/snstack/agent.conf.new"
	-rmdir "$(DESTDIR)$(PKGLIBDIR)" 2>/dev/null
	@conf="$(DESTDIR)$(SYSCONFDIR)/snstack/agent.conf"; \
	if cmp -s etc/agent.conf "$$conf"; then rm -f "$$conf"; rmdir "$(DESTDIR)$(SYSCONFDIR)/snstack" 2>/dev/null || true; \
	elif [ -e "$$conf" ]; then echo "kept $$conf (edited)"; fi
