# goro: build, test, demo, benchmarks and install.
#
#   make            libgoro.a and libgoro.so in build/
#   make demo       builds and runs the main demo (installs what it needs)
#   make test       builds and runs the whole test suite, including the
#                   sanitizer builds (installs what it needs)
#   make bench      runs the benchmark suite against Go, Boost.Context and threads
#   make bench-policy  runs the stack-policy field cases (docs/stack-policy.md)
#   make install    PREFIX=/usr/local by default
#
# BUILD=asan|ubsan|tsan selects a checking build in build-$(BUILD)/.

CC      ?= cc
BUILD   ?= release
PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include

# cmpxchg16b for the 16-byte histogram cells (every x86-64 CPU since 2008).
ARCHFLAGS := $(if $(filter x86_64,$(shell uname -m)),-mcx16)
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
# -fstack-clash-protection makes every large frame probe its pages top-down,
# so any frame that would jump over a guard touches it first.
BASE    := -std=gnu11 -g -fPIC $(ARCHFLAGS) -fstack-clash-protection -fno-omit-frame-pointer $(WARN) -Iinclude -iquote src
ifeq ($(BUILD),release)
  OUT   := build
  OPT   := -O2
else ifeq ($(BUILD),asan)
  OUT   := build-asan
  OPT   := -O1 -fsanitize=address -fno-sanitize-recover=all -DGORO_ASAN
else ifeq ($(BUILD),ubsan)
  OUT   := build-ubsan
  OPT   := -O1 -fsanitize=undefined -fno-sanitize-recover=all
else ifeq ($(BUILD),tsan)
  OUT   := build-tsan
  OPT   := -O1 -fsanitize=thread -DGORO_TSAN
else
  $(error unknown BUILD=$(BUILD): use release, asan, ubsan or tsan)
endif
CFLAGS  ?=
CFLAGS  += $(BASE) $(OPT) $(if $(WERROR),-Werror)
LDFLAGS += $(filter -fsanitize=%,$(OPT))
LIBS    := -lpthread

LIB_SRC := src/goro.c src/sched.c src/stack.c src/chan.c src/sync.c src/pool.c src/gc.c src/stats.c src/trace.c src/netpoll.c src/blocking.c src/fatal.c src/debug.c \
           src/arch/context.c src/arch/context_x86_64.S
LIB_OBJ := $(patsubst src/%,$(OUT)/obj/%.o,$(LIB_SRC))
LIB_CFLAGS := -fvisibility=hidden -DGORO_NO_ERRNO_OVERRIDE

TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(OUT)/tests/%,$(TEST_SRC))
# Test programs keep their symbols in the dynamic table so that backtraces
# in fatal reports name test functions.
TEST_LDFLAGS := -rdynamic

.PHONY: all lib tests demo test test-release test-sanitizers test-asan test-ubsan test-tsan bench install clean deps-test deps-demo deps-bench check-symbols
all: lib

lib: $(OUT)/libgoro.a $(OUT)/libgoro.so $(OUT)/goro.pc

$(OUT)/obj/%.c.o: src/%.c $(wildcard src/*.h src/arch/*.h) include/goro.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LIB_CFLAGS) -c $< -o $@

$(OUT)/obj/%.S.o: src/%.S
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(OUT)/libgoro.a: $(LIB_OBJ)
	ar rcs $@ $^

$(OUT)/libgoro.so: $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libgoro.so.0 $(LDFLAGS) -o $@ $^ $(LIBS)

$(OUT)/goro.pc: goro.pc.in
	@mkdir -p $(OUT)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCDIR@|$(INCDIR)|' $< > $@

$(OUT)/tests/%: tests/%.c tests/harness.h $(OUT)/libgoro.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(TEST_LDFLAGS) $(LDFLAGS) -o $@ $< $(OUT)/libgoro.a $(LIBS)

tests: $(TEST_BIN)

# The stack tests share tests/stack_check.h. test_cases_overflow also links
# tests/stack_frames.c built three ways: at -O0 and at -O2, and at -O2
# without -fstack-clash-protection or sanitizers, to show what a frame
# larger than the guard does when no probe touches the guard first.
STACK_TESTS := test_stack test_overflow test_cases_overflow test_cases_limits test_cases_guards
$(patsubst %,$(OUT)/tests/%,$(STACK_TESTS)): tests/stack_check.h
# The observability tests share tests/observe.h.
OBSERVE_TESTS := test_stats test_debug test_trace
$(patsubst %,$(OUT)/tests/%,$(OBSERVE_TESTS)): tests/observe.h
FRAMES_OBJ := $(patsubst %,$(OUT)/tests/stack_frames_%.o,o0 o2 noprobe)
$(OUT)/tests/stack_frames_o0.o: FRAMES_FLAGS := -O0
$(OUT)/tests/stack_frames_o2.o: FRAMES_FLAGS := -O2
$(OUT)/tests/stack_frames_noprobe.o: FRAMES_FLAGS := -O2 -fno-stack-clash-protection -fno-sanitize=all
$(OUT)/tests/stack_frames_%.o: tests/stack_frames.c tests/stack_frames.h include/goro.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FRAMES_FLAGS) -DFRAMES_VARIANT=$* -c $< -o $@

$(OUT)/tests/test_cases_overflow: tests/test_cases_overflow.c tests/harness.h $(FRAMES_OBJ) $(OUT)/libgoro.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(TEST_LDFLAGS) $(LDFLAGS) -o $@ $< $(FRAMES_OBJ) $(OUT)/libgoro.a $(LIBS)

# Only goro_ symbols may leave the shared library.
check-symbols: $(OUT)/libgoro.so
	@bad=$$(nm -D --defined-only $< | awk '{print $$3}' | grep -v '^goro_' | grep -v '^_' ); \
	if [ -n "$$bad" ]; then echo "exported non-goro symbols: $$bad"; exit 1; fi; \
	if nm -D --defined-only $< | awk '{print $$3}' | grep -q '^goro__'; then \
	  echo "internal goro__ symbols are exported"; exit 1; fi; \
	echo "check-symbols: only goro_ symbols exported"

deps-test:
	@sh tools/install-deps.sh test

deps-demo:
	@sh tools/install-deps.sh demo

deps-bench:
	@sh tools/install-deps.sh bench

# promtool comes with Debian's prometheus package (37 packages, about
# 100 MB), too large for deps-test. test_stats runs `promtool check
# metrics` on goro's Prometheus exposition whenever promtool is installed;
# this target installs it and runs that test.
.PHONY: check-prometheus
check-prometheus:
	@sh tools/install-deps.sh prometheus
	$(MAKE) BUILD=release lib $(OUT)/tests/test_stats
	$(OUT)/tests/test_stats prometheus_exposition_is_valid
	@echo "check-prometheus: the exposition parses and passes promtool check metrics"

# -B rebuilds everything with -Werror even when an earlier plain `make` left
# objects behind, so a warning can never hide in a stale object file.
test-release:
	$(MAKE) -B BUILD=release WERROR=1 lib tests check-symbols
	sh tests/run.sh build/tests

test-asan:
	$(MAKE) -B BUILD=asan WERROR=1 tests
	GORO_TEST_SANITIZER=asan sh tests/run.sh build-asan/tests

test-ubsan:
	$(MAKE) -B BUILD=ubsan WERROR=1 tests
	GORO_TEST_SANITIZER=ubsan sh tests/run.sh build-ubsan/tests

# Under ThreadSanitizer the tests that keep more than 8,128 goroutines alive
# run smaller (TSan allows no more fibers, and each goroutine is one), and
# the 64 GiB stack test is skipped because TSan's address layout leaves no
# room for that slot. The run takes about 3 minutes on a 2-vCPU VM.
test-tsan:
	$(MAKE) -B BUILD=tsan WERROR=1 tests
	GORO_TEST_SANITIZER=tsan sh tests/run.sh build-tsan/tests

test-sanitizers:
	@status=0; \
	$(MAKE) test-asan || status=1; \
	$(MAKE) test-ubsan || status=1; \
	$(MAKE) test-tsan || status=1; \
	exit $$status

# Every build runs even when an earlier one fails, so one run of the suite
# shows all of its failures.
test: deps-test
	@status=0; \
	$(MAKE) test-release || status=1; \
	$(MAKE) test-sanitizers || status=1; \
	if [ $$status -ne 0 ]; then echo "make test: FAILED (see the failures above)"; fi; \
	exit $$status

demo: deps-demo
	$(MAKE) BUILD=release lib build/examples/demo
	./build/examples/demo

build/examples/%: examples/%.c build/libgoro.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -rdynamic -o $@ $< build/libgoro.a $(LIBS) -lm

# Benchmarks: bench/run.py runs the programs built here against their Go,
# Boost.Context and threads peers and writes docs/benchmarks-results.md
# (docs/benchmarks.md explains each one). BENCH=group[,group...] runs only
# those groups (spawn rss pingpong growth thrash alloc); ROUNDS=n sets the
# number of rounds (default 5).
BENCH_BIN     := build/bench
BENCH_GORO    := $(patsubst bench/goro/%.c,$(BENCH_BIN)/goro/%,$(wildcard bench/goro/*.c))
BENCH_THREADS := $(patsubst bench/threads/%.c,$(BENCH_BIN)/threads/%,$(wildcard bench/threads/*.c))
BENCH_BOOST   := $(patsubst bench/boost/%.cpp,$(BENCH_BIN)/boost/%,$(wildcard bench/boost/*.cpp))

.PHONY: bench-programs
bench: deps-bench
	$(MAKE) BUILD=release lib bench-programs
	python3 bench/run.py $(if $(BENCH),--only $(BENCH)) $(if $(ROUNDS),--rounds $(ROUNDS))

# The Go programs build offline: GOPROXY=off, and their module needs nothing
# outside the standard library.
bench-programs: $(BENCH_GORO) $(BENCH_THREADS) $(BENCH_BOOST)
	@mkdir -p $(BENCH_BIN)/go
	cd bench/go && GOPROXY=off GOFLAGS=-mod=mod go build -o ../../$(BENCH_BIN)/go/ ./...

$(BENCH_BIN)/goro/alloc: BENCH_LIBS := -lmimalloc

$(BENCH_BIN)/goro/%: bench/goro/%.c bench/common.h build/libgoro.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< build/libgoro.a $(LIBS) $(BENCH_LIBS)

$(BENCH_BIN)/threads/%: bench/threads/%.c bench/common.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIBS)

$(BENCH_BIN)/boost/%: bench/boost/%.cpp bench/boost/common.hpp
	@mkdir -p $(dir $@)
	$(CXX) -std=c++17 -O2 -g -Wall -Wextra -Wshadow -o $@ $< -lboost_context

# The cost of goro_read_memstats at 1,000 and 100,000 parked goroutines.
.PHONY: bench-stats-read
bench-stats-read: $(BENCH_BIN)/stats_read
	$(BENCH_BIN)/stats_read

$(BENCH_BIN)/stats_read: bench/stats_read.c build/libgoro.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< build/libgoro.a $(LIBS)

# The stack-policy field cases F01-F07: one program per case in
# bench/policy, each printing a result table and a PASS or FAIL line per
# target. Every program runs even when an earlier one fails.
BENCH_POLICY := $(patsubst bench/policy/%.c,$(BENCH_BIN)/policy/%,$(wildcard bench/policy/*.c))

.PHONY: bench-policy
bench-policy:
	$(MAKE) BUILD=release lib $(BENCH_POLICY)
	@status=0; for b in $(BENCH_POLICY); do $$b || status=1; echo; done; \
	if [ $$status -ne 0 ]; then echo "bench-policy: some targets FAILED (see above)"; fi; \
	exit $$status

$(BENCH_BIN)/policy/%: bench/policy/%.c bench/policy/policy_bench.h bench/common.h build/libgoro.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< build/libgoro.a $(LIBS)

install: lib
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 644 include/goro.h $(DESTDIR)$(INCDIR)/goro.h
	install -m 644 $(OUT)/libgoro.a $(DESTDIR)$(LIBDIR)/libgoro.a
	install -m 755 $(OUT)/libgoro.so $(DESTDIR)$(LIBDIR)/libgoro.so.0
	ln -sf libgoro.so.0 $(DESTDIR)$(LIBDIR)/libgoro.so
	# Written here rather than copied from $(OUT): build/goro.pc keeps the
	# PREFIX of the build, which may differ from this install's.
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCDIR@|$(INCDIR)|' \
	  goro.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/goro.pc
	chmod 644 $(DESTDIR)$(LIBDIR)/pkgconfig/goro.pc

clean:
	rm -rf build build-asan build-ubsan build-tsan
