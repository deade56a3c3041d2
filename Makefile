# grpc-failover: `make demo` runs the failover demo, `make test` runs every test.
# Both install what is missing first (make deps).

SHELL := /bin/bash
PREFIX ?= /usr/local
CARGO ?= cargo
export CARGO_TERM_COLOR := never
LIB_DIR := $(CURDIR)/target/release
export GF_LIBRARY := $(LIB_DIR)/libgrpc_failover.so
export GF_TESTSERVER := $(LIB_DIR)/gf-testserver
export GF_INCLUDE := $(CURDIR)/include

.PHONY: all deps build wheel test-wheel test-sdist check-header test test-rust test-faults test-c test-chaos test-examples test-python test-go test-fuzz test-miri fuzz demo bench install uninstall clean lint

all: build

deps:
	@bash scripts/deps.sh

build: deps
	$(CARGO) build --release --lib --bins
	@bash scripts/soname-link.sh target/release

# The committed header must be what build.rs generates from the code.
check-header: build
	@git diff --exit-code -- include/grpc_failover.h || { echo "include/grpc_failover.h is stale: commit the regenerated header"; exit 1; }

lint: build
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

test: check-header lint test-rust test-c test-chaos test-examples test-python test-wheel test-go test-fuzz test-miri
	@echo "all test suites passed"

test-rust: build
	$(CARGO) test --release -- --test-threads=2

# The fault suite alone (test-rust runs it too), printing one summary line per fault.
test-faults: build
	$(CARGO) test --release --test faults -- --nocapture --test-threads=2

test-c: build
	bash tests/c/run.sh

test-chaos: build
	bash tests/chaos/run.sh

# The README's C and C++ snippets and the examples compile as written.
test-examples: build
	bash tests/examples.sh

test-python: build
	bash bindings/python/run_tests.sh

test-go: build
	bash bindings/go/run_tests.sh

# The Python package as an index serves it (scripts/wheel.sh): the manylinux wheel and the sdist
# in dist/.
wheel: build
	bash scripts/wheel.sh dist

# The wheel installed into a fresh venv outside the checkout, a call made with no environment.
test-wheel: wheel
	bash tests/wheel/run.sh wheel dist

# The sdist built from source by pip in a fresh venv (a full cargo build: minutes; not part of
# `make test`).
test-sdist: wheel
	bash tests/wheel/run.sh sdist dist

# Each fuzz target (fuzz/README.md) for FUZZ_SECONDS under libFuzzer + ASan; needs nightly
# and cargo-fuzz. FUZZ_TARGETS picks some. New inputs stay in fuzz/corpus.
FUZZ_SECONDS ?= 60
fuzz: build
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh $(FUZZ_TARGETS)

# The short run of every fuzz target that `make test` does (a replay of the seeds on stable
# when there is no nightly).
test-fuzz: build
	bash scripts/fuzz.sh --smoke

# The C ABI's unsafe helpers (strings, buffers, handles, the panic boundary) under Miri,
# when the nightly toolchain has it.
test-miri: deps
	bash scripts/miri.sh

demo: build
	bash examples/demo.sh

bench: build
	bash bench/run.sh

# The library (stripped: target/release keeps its debug info for backtraces and valgrind) as
# libgrpc_failover.so.X.Y.Z with the SONAME link .so.X and the development link
# .so, the static library, both headers, pkg-config and CMake package files. `make uninstall`
# with the same PREFIX (and DESTDIR) removes exactly these.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
MAJOR := $(firstword $(subst ., ,$(VERSION)))
LIBDIR := $(DESTDIR)$(PREFIX)/lib
CMAKEDIR := $(LIBDIR)/cmake/grpc_failover
SUBST := sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' -e 's|@MAJOR@|$(MAJOR)|g'

install: build
	install -d $(LIBDIR) $(DESTDIR)$(PREFIX)/include $(LIBDIR)/pkgconfig $(CMAKEDIR)
	install -m 644 target/release/libgrpc_failover.a $(LIBDIR)/
	install -m 755 -s target/release/libgrpc_failover.so $(LIBDIR)/libgrpc_failover.so.$(VERSION)
	ln -sfn libgrpc_failover.so.$(VERSION) $(LIBDIR)/libgrpc_failover.so.$(MAJOR)
	ln -sfn libgrpc_failover.so.$(MAJOR) $(LIBDIR)/libgrpc_failover.so
	install -m 644 include/grpc_failover.h include/grpc_failover.hpp $(DESTDIR)$(PREFIX)/include/
	$(SUBST) grpc_failover.pc.in > $(LIBDIR)/pkgconfig/grpc_failover.pc
	$(SUBST) cmake/grpc_failoverConfig.cmake.in > $(CMAKEDIR)/grpc_failoverConfig.cmake
	$(SUBST) cmake/grpc_failoverConfigVersion.cmake.in > $(CMAKEDIR)/grpc_failoverConfigVersion.cmake

uninstall:
	rm -f $(LIBDIR)/libgrpc_failover.a $(LIBDIR)/libgrpc_failover.so.$(VERSION) \
	    $(LIBDIR)/libgrpc_failover.so.$(MAJOR) $(LIBDIR)/libgrpc_failover.so \
	    $(DESTDIR)$(PREFIX)/include/grpc_failover.h $(DESTDIR)$(PREFIX)/include/grpc_failover.hpp \
	    $(LIBDIR)/pkgconfig/grpc_failover.pc \
	    $(CMAKEDIR)/grpc_failoverConfig.cmake $(CMAKEDIR)/grpc_failoverConfigVersion.cmake
	-rmdir $(CMAKEDIR) 2>/dev/null

clean:
	$(CARGO) clean
