# medpipe: plain GNU Makefile.
#   make            library (static + shared) and the medpipe command
#   make test       build and run every test; ends with "N passed, N failed"
#   make asan       the same tests under AddressSanitizer + UBSan
#   make fuzz       libFuzzer targets (clang); make fuzz-smoke runs each briefly
#   make bench      benchmarks under bench/
#   make demo       the main job on the embedded synthetic default
#   make deps       install missing Debian packages
# BUILD=dir keeps a separate build tree (used by asan).

BUILD ?= build
# V=1 shows full compiler command lines.
Q := $(if $(V),,@)
CC ?= cc
ifeq ($(origin CC),default)
CC := gcc
endif
PYTHON ?= /usr/bin/python3

GOALS := $(if $(MAKECMDGOALS),$(MAKECMDGOALS),all)
NO_DEPS_GOALS := clean distclean help
ifneq ($(filter-out $(NO_DEPS_GOALS),$(GOALS)),)
  DEPS_KIND := build
  ifneq ($(filter test asan check demo bench,$(GOALS)),)
    DEPS_KIND := test
  endif
  ifneq ($(filter fuzz fuzz-smoke deps,$(GOALS)),)
    DEPS_KIND := all
  endif
  ifeq ($(MP_SKIP_DEPS),)
    DEPS_RC := $(shell sh scripts/deps.sh $(DEPS_KIND); echo $$?)
    ifneq ($(DEPS_RC),0)
      $(error medpipe: missing dependencies could not be installed (see the messages above))
    endif
  endif
endif

# ---- optional parts ----
HAVE_DNNL := $(shell test -f /usr/include/oneapi/dnnl/dnnl.h && echo 1)
HAVE_MPI := $(shell command -v mpicc >/dev/null 2>&1 && echo 1)
HAVE_NVCC := $(shell command -v nvcc >/dev/null 2>&1 && echo 1)
HAVE_CLANG := $(shell command -v clang >/dev/null 2>&1 && echo 1)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Werror
OPT ?= -O2 -march=x86-64-v3 -g
CFLAGS_ALL := -std=c11 $(OPT) $(WARN) -D_GNU_SOURCE -fPIC -pthread -Iinclude -Isrc -I/usr/include/openjpeg-2.5 $(CFLAGS)
LIBS := -ldeflate -lz -lcjson -ljpeg -lcharls -lopenjp2 -lm -ldl -pthread
ifeq ($(HAVE_DNNL),1)
  CFLAGS_ALL += -DMP_HAVE_DNNL=1
  LIBS += -ldnnl
endif
# MPI: the library is compiled and linked with mpicc's flags (src/dist).
MPI_CFLAGS := $(if $(HAVE_MPI),$(shell mpicc --showme:compile) -DMP_HAVE_MPI=1)
ifeq ($(HAVE_MPI),1)
  CFLAGS_ALL += -DMP_HAVE_MPI_RUNTIME=1 $(MPI_CFLAGS)
  LIBS += $(shell mpicc --showme:link)
endif
LDFLAGS_ALL := $(LDFLAGS)

LIB_SRC := $(sort $(wildcard src/core/*.c src/io/*.c src/vol/*.c src/data/*.c src/metrics/*.c \
                             src/nn/*.c src/ref/*.c src/cpu/*.c src/train/*.c src/infer/*.c src/dist/*.c))
CLI_SRC := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
FUZZ_SRC := $(sort $(wildcard fuzz/fuzz_*.c))
BENCH_SRC := $(sort $(wildcard bench/bench_*.c))
HDRS := $(wildcard include/medpipe/*.h src/*/*.h tests/*.h)

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
FUZZ_BIN := $(FUZZ_SRC:fuzz/%.c=$(BUILD)/fuzz/%)

STATIC_LIB := $(BUILD)/libmedpipe.a
SHARED_LIB := $(BUILD)/libmedpipe.so
MEDPIPE := $(BUILD)/medpipe

.PHONY: all deps test check asan fuzz fuzz-smoke bench demo clean help report
.DEFAULT_GOAL := all

all: report $(STATIC_LIB) $(SHARED_LIB) $(MEDPIPE)

report:
	@echo "medpipe build ($(BUILD)): oneDNN $(if $(HAVE_DNNL),found,not found) | MPI $(if $(HAVE_MPI),found (mpicc),not found) | CUDA $(if $(HAVE_NVCC),nvcc found (backend not built yet),not found) | clang $(if $(HAVE_CLANG),found,not found)"

deps:
	@sh scripts/deps.sh all && echo "medpipe deps: all present"

$(BUILD)/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS_ALL) -c $< -o $@

$(STATIC_LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo "  AR      $@"
	$(Q)rm -f $@ && ar rcs $@ $^

$(SHARED_LIB): $(LIB_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) -shared $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

$(MEDPIPE): $(CLI_OBJ) $(STATIC_LIB)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS_ALL) $(CFLAGS_ALL) -o $@ $(CLI_OBJ) $(STATIC_LIB) $(LIBS)

$(BUILD)/tests/%: tests/%.c $(STATIC_LIB) $(HDRS)
	@mkdir -p $(dir $@)
	@echo "  TEST    $@"
	$(Q)$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(STATIC_LIB) $(LIBS)

$(BUILD)/bench/%: bench/%.c $(STATIC_LIB) $(HDRS)
	@mkdir -p $(dir $@)
	@echo "  BENCH   $@"
	$(Q)$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(STATIC_LIB) $(LIBS)

test check: all $(TEST_BIN)
	@MEDPIPE=$(abspath $(MEDPIPE)) BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) sh tests/run.sh $(TEST_BIN)

# Sanitizer build in its own tree; recursion keeps one set of rules. Same ISA
# as the release build: the AVX2 kernels themselves run under the sanitizers.
asan:
	$(MAKE) --no-print-directory BUILD=build-asan MP_SKIP_DEPS=1 \
	  OPT="-O1 -g -march=x86-64-v3 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" test

# libFuzzer targets: clang, the library compiled once with coverage and the
# sanitizers (fuzzer-no-link), each target linked against those objects; the
# project warnings stay on.
FUZZ_SAN := address,undefined
FUZZ_CFLAGS := -std=c11 -O1 -g $(WARN) -D_GNU_SOURCE -Iinclude -Isrc -I/usr/include/openjpeg-2.5 \
               -fno-sanitize-recover=undefined $(if $(HAVE_DNNL),-DMP_HAVE_DNNL=1) $(MPI_CFLAGS)
FUZZ_OBJ := $(LIB_SRC:%.c=$(BUILD)/fuzzobj/%.o)
fuzz: $(FUZZ_BIN)

# Keep the instrumented objects between runs (they are intermediate files).
.SECONDARY: $(FUZZ_OBJ)

$(BUILD)/fuzzobj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	@echo "  CC-FUZZ $<"
	$(Q)clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,$(FUZZ_SAN) -c $< -o $@

$(BUILD)/fuzz/%: fuzz/%.c $(FUZZ_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	@echo "  FUZZ    $@"
	$(Q)clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,$(FUZZ_SAN) -o $@ $< $(FUZZ_OBJ) $(LIBS)

FUZZ_SECONDS ?= 20
fuzz-smoke: fuzz
	@sh fuzz/smoke.sh $(FUZZ_SECONDS) $(FUZZ_BIN)

bench: all $(BENCH_BIN)
	@MEDPIPE=$(abspath $(MEDPIPE)) BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) sh bench/run.sh $(BENCH_BIN)

demo: all
	@sh scripts/demo.sh $(MEDPIPE)

clean:
	rm -rf build build-asan

help:
	@sed -n '2,9p' Makefile
