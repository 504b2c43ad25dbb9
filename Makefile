# gateway - pre-fork application gateway.
#   make            build build/gateway, build/gatewayctl, build/examples/*.so
#   make run        install missing Debian packages, build, serve the hello app on 127.0.0.1:8000
#   make test       install missing packages, build, run every test (unit, ASan/UBSan unit, fuzz smoke, e2e)
#   make fuzz       run each libFuzzer target longer (FUZZ_SECONDS, default 60)
#   make bench      side-by-side benchmark against nginx (tools/bench/)
PKG_CONFIG     ?= pkg-config
PYTHON         ?= /usr/bin/python3
CC             ?= cc
CLANG          ?= clang
BUILD          ?= build

EV_LIBS        ?= $(shell $(PKG_CONFIG) --libs libev 2>/dev/null || echo -lev)
MSGPACK_PC     := $(shell $(PKG_CONFIG) --exists msgpack-c 2>/dev/null && echo msgpack-c || echo msgpack)
MSGPACK_CFLAGS ?= $(shell $(PKG_CONFIG) --cflags $(MSGPACK_PC) 2>/dev/null)
MSGPACK_LIBS   ?= $(shell $(PKG_CONFIG) --libs $(MSGPACK_PC) 2>/dev/null || echo -lmsgpackc)
CHECK_CFLAGS   ?= $(shell $(PKG_CONFIG) --cflags check 2>/dev/null)
CHECK_LIBS     ?= $(shell $(PKG_CONFIG) --libs check 2>/dev/null || echo -lcheck -lsubunit -lm)

OPT            ?= -O2
WARN           := -Wall -Wextra -Wshadow -Wno-unused-parameter
CFLAGS         ?= $(OPT) -g
# The Python runtime is run from the source tree (workerlib/python/) with Debian's python3.
ALL_CFLAGS      = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -Iproto -Igateway -Iworkerlib $(MSGPACK_CFLAGS) \
                  -DGW_SOURCE_DIR='"$(CURDIR)"' -DGW_PYTHON='"$(PYTHON)"'
LIBS            = $(EV_LIBS) $(MSGPACK_LIBS) -ldl -lpthread

# What goes into the gateway binary (workerlib is linked in: a native worker
# is a forked copy of the gateway, and apps resolve gwl_* against it).
PROTO_SRCS     := proto/gwp.c
GATEWAY_SRCS   := $(filter-out gateway/main.c,$(wildcard gateway/*.c))
WORKERLIB_SRCS := $(wildcard workerlib/*.c)
CORE_SRCS      := $(PROTO_SRCS) $(GATEWAY_SRCS) $(WORKERLIB_SRCS)
CORE_OBJS      := $(CORE_SRCS:%.c=$(BUILD)/obj/%.o)
EXAMPLES       := $(patsubst workerlib/examples/%.c,$(BUILD)/examples/%.so,$(wildcard workerlib/examples/*.c))

# Unit tests: every tests/unit/<dir>/check_*.c, linked with the core objects.
UNIT_SRCS      := tests/unit/check_main.c $(wildcard tests/unit/*/check_*.c)
# Test vectors generated from the request corpora in tests/data/corpus/ (C headers in build/gen/).
UNIT_GEN       := $(patsubst tests/data/corpus/%.jsonl,$(BUILD)/gen/corpus_%.h,$(wildcard tests/data/corpus/*.jsonl))

.PHONY: all deps deps-test run test unit unit-py unit-asan fuzz fuzz-smoke e2e bench clean
all: $(BUILD)/gateway $(BUILD)/gatewayctl $(EXAMPLES)

deps:
	@tools/install-deps.sh build
deps-test:
	@tools/install-deps.sh test

$(BUILD)/obj/%.o: %.c $(wildcard proto/*.h gateway/*.h workerlib/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/gateway: $(BUILD)/obj/gateway/main.o $(CORE_OBJS) workerlib/gwl.dynlist
	$(CC) $(CFLAGS) -o $@ $(BUILD)/obj/gateway/main.o $(CORE_OBJS) -Wl,--dynamic-list=workerlib/gwl.dynlist $(LIBS)

$(BUILD)/gatewayctl: tools/gatewayctl.c $(BUILD)/obj/proto/gwp.o
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ tools/gatewayctl.c $(BUILD)/obj/proto/gwp.o $(MSGPACK_LIBS)

$(BUILD)/examples/%.so: workerlib/examples/%.c workerlib/gwl.h workerlib/examples/example.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fPIC -shared -o $@ $< $(EV_LIBS)

# ---- tests ----
$(BUILD)/gen/corpus_%.h: tests/data/corpus/%.jsonl tests/unit/gen_corpus.py
	@mkdir -p $(dir $@)
	$(PYTHON) tests/unit/gen_corpus.py $< > $@.tmp && mv $@.tmp $@

$(BUILD)/unit: $(UNIT_SRCS) $(CORE_OBJS) $(wildcard tests/unit/*.h) $(UNIT_GEN)
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -Itests/unit -I$(BUILD)/gen -o $@ $(UNIT_SRCS) $(CORE_OBJS) -Wl,--dynamic-list=workerlib/gwl.dynlist $(CHECK_LIBS) $(LIBS)

# ASan/UBSan build of the same tests, objects kept apart.
$(BUILD)/asan/unit: $(UNIT_SRCS) $(CORE_SRCS) $(wildcard proto/*.h gateway/*.h workerlib/*.h tests/unit/*.h) $(UNIT_GEN)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all \
	    -Itests/unit -I$(BUILD)/gen -o $@ $(UNIT_SRCS) $(CORE_SRCS) -Wl,--dynamic-list=workerlib/gwl.dynlist $(CHECK_LIBS) $(LIBS)

unit: $(BUILD)/unit
	cd tests/unit && ../../$(BUILD)/unit

# the C codec against the pure-Python reference and a spec checker
unit-py: pyext
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/unit/test_gwfast.py

unit-asan: $(BUILD)/asan/unit
	cd tests/unit && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=1 UBSAN_OPTIONS=print_stacktrace=1 ../../$(BUILD)/asan/unit

FUZZ_TARGETS   := $(patsubst tools/fuzz/fuzz_%.c,$(BUILD)/fuzz/fuzz_%,$(wildcard tools/fuzz/fuzz_*.c))
FUZZ_FLAGS     := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Iproto -Igateway -Iworkerlib $(MSGPACK_CFLAGS)
FUZZ_SECONDS   ?= 60
SMOKE_SECONDS  ?= 10

$(BUILD)/fuzz/fuzz_http1: tools/fuzz/fuzz_http1.c gateway/http1.c gateway/http1.h
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_FLAGS) -o $@ tools/fuzz/fuzz_http1.c gateway/http1.c
$(BUILD)/fuzz/fuzz_proto: tools/fuzz/fuzz_proto.c proto/gwp.c proto/gwp.h
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_FLAGS) -o $@ tools/fuzz/fuzz_proto.c proto/gwp.c $(MSGPACK_LIBS)

fuzz-smoke: $(FUZZ_TARGETS)
	@for t in $(FUZZ_TARGETS); do n=$$(basename $$t); mkdir -p $(BUILD)/fuzz/corpus-$$n; \
	  echo "fuzz smoke: $$n ($(SMOKE_SECONDS)s)"; \
	  $$t -max_total_time=$(SMOKE_SECONDS) -rss_limit_mb=1024 -print_final_stats=0 $(BUILD)/fuzz/corpus-$$n tools/fuzz/seeds-$$n 2>$(BUILD)/fuzz/$$n.log \
	    || { tail -40 $(BUILD)/fuzz/$$n.log; exit 1; }; done

fuzz: $(FUZZ_TARGETS)
	@$(MAKE) --no-print-directory fuzz-smoke SMOKE_SECONDS=$(FUZZ_SECONDS)

e2e: all
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e
	@echo "e2e: Python runtime again with its pure-Python codec (the fallback)"
	GATEWAY_PY_CODEC=python $(PYTHON) -m pytest -q -p no:cacheprovider \
	    tests/e2e/test_python.py tests/e2e/test_wsgi_pep3333.py tests/e2e/test_asgi.py

test: deps-test
	@$(MAKE) --no-print-directory all $(BUILD)/unit $(BUILD)/asan/unit
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory unit-py
	@$(MAKE) --no-print-directory unit-asan
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory e2e

run: deps
	@$(MAKE) --no-print-directory all
	exec $(BUILD)/gateway -w 2 -b 127.0.0.1:8000 $(BUILD)/examples/hello.so

bench: all
	tools/install-deps.sh bench
	tools/bench/bench.sh

clean:
	rm -rf $(BUILD)

# The Python runtime's C codec (built with `all`; the runtime falls back to
# its pure-Python reference codec when it is missing).
include workerlib/python/gwfast.mk
all: pyext
