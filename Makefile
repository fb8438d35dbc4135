# Flock build. `make` builds build/flock; see `make help` for the rest.
# Everything lands in $(BUILD)/ so sanitizer and clang builds live side by side.

ifeq ($(origin CC),default)
CC      := gcc
endif
BUILD   ?= build
PREFIX  ?= /usr/local
OPT     ?= -O2 -g
SAN     ?=
PYTEST  ?= /usr/bin/python3 -m pytest
FUZZ_SECONDS ?= 60
# An undefined-behaviour report stops a fuzzer like a crash does.
FUZZ_ENV := UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

WARN    := -Wall -Wextra -Werror -Wshadow -Wundef -Wwrite-strings \
           -Wmissing-prototypes -Wstrict-prototypes
CFLAGS  := -std=gnu11 $(OPT) $(WARN) $(SAN) -Isrc -D_GNU_SOURCE $(EXTRA_CFLAGS)
LDFLAGS := $(SAN)
LIBS    := -lraft -luv -lsodium -lm

LIB_SRC := $(wildcard src/base/*.c src/vm/*.c src/lang/*.c src/cluster/*.c src/dsm/*.c src/dist/*.c)
CLI_SRC := $(wildcard src/cli/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(wildcard tests/unit/*/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

FLOCK := $(BUILD)/flock

.PHONY: all run test check unit programs cluster docs asan asan-check tsan tsan-check stress fault fault-short fuzz bench install clean help deps-build deps-test deps-bench clang

all: $(FLOCK)

help:
	@echo "make            build $(FLOCK)"
	@echo "make run        install what is missing, build, run examples/primes.fl (threads)"
	@echo "make test       install what is missing, run every test: gcc build, clang build"
	@echo "                (switch dispatch), Address+UB and Thread sanitizers, and"
	@echo "                the fault harness once per kind of fault (fault-short)"
	@echo "make cluster    a VM of real daemons on loopback (tests/cluster)"
	@echo "make unit       the unit tests; DSM_STRESS_SEEDS=N runs N seeds (not 200)"
	@echo "                of each simulated DSM test, DSM_SEED=S only seed S"
	@echo "make asan       the whole suite under Address+UndefinedBehavior sanitizers"
	@echo "make tsan       the golden programs and the cluster under ThreadSanitizer"
	@echo "make stress     the thread programs STRESS_RUNS=$(STRESS_RUNS) times on 1, 2, 8 workers"
	@echo "                and the DSM simulator's tests over DSM_STRESS_SEEDS=$(DSM_STRESS_SEEDS)"
	@echo "                seeds, the golden thread programs on 2 and 3 simulated machines"
	@echo "                over DIST_STRESS_SEEDS=$(DIST_STRESS_SEEDS)"
	@echo "make fault      the fault harness: FAULT_SCHEDULES=$(FAULT_SCHEDULES) seeded schedules from"
	@echo "                FAULT_SEED=$(FAULT_SEED), each a kill -9, SIGSTOP or connections cut"
	@echo "                (as root) of one machine of three under a workload"
	@echo "make fuzz       libFuzzer on the module loader+verifier, the thread-state"
	@echo "                decoder, the frame decoder, the handshake, the"
	@echo "                .fl compiler and the control plane's entries and"
	@echo "                snapshots, the daemon's message payloads, and the"
	@echo "                DSM's messages and those between a process's parts,"
	@echo "                FUZZ_SECONDS=$(FUZZ_SECONDS) each"
	@echo "make bench      benchmarks side by side with lua5.4, luajit -joff, Erlang and Go,"
	@echo "                the cluster's latencies against the loopback round trip, and"
	@echo "                one process over two machines (bench/cluster/)"
	@echo "make docs       check docs/isa.md against the instruction table"
	@echo "make install    install flock into PREFIX=$(PREFIX)"
	@echo "make clean      remove build outputs"

deps-build:
	@scripts/deps.sh build
deps-test:
	@scripts/deps.sh test
deps-bench:
	@scripts/deps.sh bench

# The interpreter's handlers are the targets of computed gotos: aligning
# labels keeps its speed from swinging with code layout by up to a third
# (docs/performance.md). gcc only; clang does not take the flag.
ifeq ($(shell $(CC) --version 2>/dev/null | grep -c clang),0)
$(BUILD)/src/vm/vm_interp.o: CFLAGS += -falign-labels=32
endif

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	@$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libflock.a: $(LIB_OBJ)
	@rm -f $@
	@ar rcs $@ $^

$(FLOCK): $(CLI_OBJ) $(BUILD)/libflock.a
	@echo "  LINK    $@"
	@$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libflock.a $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libflock.a
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -MMD -MP -o $@ $< $(BUILD)/libflock.a $(LIBS) -lcmocka

$(BUILD)/isadoc: tests/tools/isadoc.c $(BUILD)/libflock.a
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libflock.a $(LIBS)

run: deps-build
	@$(MAKE) --no-print-directory all
	$(FLOCK) run examples/primes.fl

# The README's test command: everything a change must keep green.
test: deps-test
	@$(MAKE) --no-print-directory check
	@$(MAKE) --no-print-directory fault-short
	@$(MAKE) --no-print-directory clang
	@$(MAKE) --no-print-directory asan-check
	@$(MAKE) --no-print-directory tsan-check

check: all unit programs cluster docs

# Run every unit binary even when one fails, then fail if any did.
unit: $(UNIT_BIN)
	@rc=0; for t in $(UNIT_BIN); do echo "== $$t"; $$t || rc=1; done; exit $$rc

programs: $(FLOCK)
	FLOCK=$(abspath $(FLOCK)) FLOCK_SAN="$(SAN)" $(PYTEST) -q tests/programs

# A VM of real daemons on loopback addresses (tests/cluster).
cluster: $(FLOCK)
	FLOCK=$(abspath $(FLOCK)) $(PYTEST) -q tests/cluster

docs: $(BUILD)/isadoc
	@$(BUILD)/isadoc --check docs/isa.md

# clang must keep building; its build also runs the golden programs through
# the portable switch dispatch, so that fallback stays correct.
clang:
	@$(MAKE) --no-print-directory CC=clang BUILD=build-clang \
		EXTRA_CFLAGS=-DVM_SWITCH_DISPATCH all programs

asan: deps-test
	@$(MAKE) --no-print-directory asan-check

# ThreadSanitizer over the golden programs (threads run on 1, 2 and 8
# workers there) and the cluster's daemons; any report fails the run.
tsan: deps-test
	@$(MAKE) --no-print-directory tsan-check

tsan-check:
	@$(MAKE) --no-print-directory CC=clang BUILD=build-tsan OPT="-O1 -g" \
		SAN="-fsanitize=thread" all
	@$(MAKE) --no-print-directory CC=clang BUILD=build-tsan OPT="-O1 -g" \
		SAN="-fsanitize=thread" build-tsan/tests/dist/test_dist
	FLOCK_DIST_SKIP=spawn_100k TSAN_OPTIONS="halt_on_error=1 exitcode=66" \
		build-tsan/tests/dist/test_dist
	FLOCK=$(abspath build-tsan/flock) FLOCK_SAN=thread \
		TSAN_OPTIONS="halt_on_error=1 exitcode=66" $(PYTEST) -q tests/programs
	FLOCK=$(abspath build-tsan/flock) \
		TSAN_OPTIONS="halt_on_error=1 exitcode=66 suppressions=$(abspath tests/tsan-cluster.supp)" \
		$(PYTEST) -q tests/cluster

# The thread programs $(STRESS_RUNS) times in a row on 1, 2 and 8 workers;
# the DSM simulator over many seeds; the thread programs on simulated
# machines over many seeds; the sessions between machines over many
# seeded schedules of breaks, restarts and losses.
STRESS_RUNS ?= 50
DSM_STRESS_SEEDS ?= 5000
DIST_STRESS_SEEDS ?= 20
SESS_STRESS_SEEDS ?= 20000
stress: all $(BUILD)/tests/dsm/test_dsm $(BUILD)/tests/dsm/test_dsm_sync $(BUILD)/tests/dist/test_dist $(BUILD)/tests/cluster/test_sess
	FLOCK=$(abspath $(FLOCK)) FLOCK_STRESS=$(STRESS_RUNS) $(PYTEST) -q -k threads tests/programs
	DSM_STRESS_SEEDS=$(DSM_STRESS_SEEDS) $(BUILD)/tests/dsm/test_dsm
	DSM_STRESS_SEEDS=$(DSM_STRESS_SEEDS) $(BUILD)/tests/dsm/test_dsm_sync
	FLOCK_DIST_SEEDS=$(DIST_STRESS_SEEDS) $(BUILD)/tests/dist/test_dist
	SESS_SEEDS=$(SESS_STRESS_SEEDS) $(BUILD)/tests/cluster/test_sess

# The fault harness (tests/fault/harness.py): real daemons, kill -9,
# SIGSTOP or cut connections of one machine of three under a workload, a
# checker over the history. FAULT_SCHEDULES seeded schedules from
# FAULT_SEED; make test runs fault-short, one schedule of each kind.
FAULT_SCHEDULES ?= 20
FAULT_SEED ?= 1
fault: all
	FLOCK=$(abspath $(FLOCK)) /usr/bin/python3 tests/fault/harness.py \
		--schedules $(FAULT_SCHEDULES) --seed $(FAULT_SEED)
fault-short: all
	FLOCK=$(abspath $(FLOCK)) /usr/bin/python3 tests/fault/harness.py \
		--schedules 1 --seed $(FAULT_SEED) --each

asan-check:
	@$(MAKE) --no-print-directory BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
		SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" check

fuzz: deps-test
	@$(MAKE) --no-print-directory CC=clang BUILD=build-fuzz \
		OPT="-O1 -g" SAN="-fsanitize=fuzzer-no-link,address,undefined" build-fuzz/libflock.a
	@for f in $(FUZZERS); do $(MAKE) --no-print-directory fuzz-$$f || exit 1; done

# The fuzzers, in the order `make fuzz` runs them: fuzz-NAME links
# tests/fuzz/fuzz_NAME.c against the library `make fuzz` has just built (with
# FUZZ_LIBS_NAME besides libsodium and libm) and runs it on
# build-fuzz/corpus-NAME and tests/fuzz/seeds-NAME, or on FUZZ_SEEDS_NAME where
# its seeds lie elsewhere. `make fuzz FUZZERS="ctl wire"` runs only those.
FUZZERS := module tstate frame handshake wire compile ctl dsm dist
FUZZ_SEEDS_module  := tests/fuzz/seeds
FUZZ_SEEDS_compile := tests/fuzz/seeds-fl
FUZZ_LIBS_tstate   := -lpthread
FUZZ_LIBS_compile  := -lpthread
FUZZ_LIBS_dist     := -lpthread

.PHONY: $(FUZZERS:%=fuzz-%)
$(FUZZERS:%=fuzz-%): fuzz-%:
	@mkdir -p build-fuzz/corpus-$*
	clang -std=gnu11 -O1 -g -Isrc -fsanitize=fuzzer,address,undefined \
		-o build-fuzz/fuzz_$* tests/fuzz/fuzz_$*.c build-fuzz/libflock.a $(strip -lsodium -lm $(FUZZ_LIBS_$*))
	$(FUZZ_ENV) build-fuzz/fuzz_$* -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		build-fuzz/corpus-$* $(or $(FUZZ_SEEDS_$*),tests/fuzz/seeds-$*)

bench: deps-bench all
	bench/run.sh
	/usr/bin/python3 bench/cluster/latency.py
	/usr/bin/python3 bench/cluster/dist.py

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(FLOCK) $(DESTDIR)$(PREFIX)/bin/flock

clean:
	rm -rf build build-asan build-clang build-fuzz build-tsan

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(UNIT_BIN:=.d)
