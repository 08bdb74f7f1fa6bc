# Sluice: the two commands of the Quick start, and a few more.
#
#   make demo   install what is missing, build, run the token-then-result job
#   make test   install what is missing, build, run every test (ctest)
#   make bench  build and run the benchmarks
#   make install  install the binaries, the op API and the CMake package
#               (PREFIX, default /usr/local), for ops of your own
#
# Demo knobs: make demo N=100000 TOKEN_WORKERS=4 RESULT_WORKERS=2 \
#                       TOKEN_THREADS=10 RESULT_THREADS=5

MAKEFLAGS += --no-print-directory

BUILD ?= build
VERSION := $(shell sed -n '/^project.sluice VERSION/s/.*VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 600
BUILD_TYPE ?= RelWithDebInfo
PREFIX ?= /usr/local
JOBS ?= $(shell nproc)
N ?= 1000
TOKEN_WORKERS ?= 3
RESULT_WORKERS ?= 2
TOKEN_THREADS ?= 10
RESULT_THREADS ?= 5
TOKEN_LATENCY_MS ?= 10
RESULT_LATENCY_MS ?= 5
CTEST_ARGS ?=
BENCH_ITEMS ?= 1000000
BENCH_RUNS ?= 3

# Debian bookworm packages. Building the binaries (and configuring the test
# and benchmark targets) needs BUILD_PACKAGES; running every test needs
# TEST_PACKAGES too (clang for the fuzzer, iproute2 and iptables for the netns tests,
# Debian's python3 with pyzmq and protobuf for the examples in other languages;
# the docker tests install Docker themselves, see deploy/docker-env.sh).
BUILD_PACKAGES := cmake g++ make pkg-config zlib1g-dev \
  libzmq3-dev cppzmq-dev libprotobuf-dev protobuf-compiler \
  libboost-program-options-dev libspdlog-dev nlohmann-json3-dev \
  prometheus-cpp-dev libcurl4-openssl-dev libgtest-dev libgmock-dev libbenchmark-dev
TEST_PACKAGES := clang libclang-rt-14-dev iproute2 iptables jq python3 python3-zmq \
  python3-protobuf
# `make bench` draws its scaling table with gnuplot.
BENCH_PACKAGES := gnuplot-nox

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps deps-build build binaries fuzz-build demo test bench fuzz \
  image install clean

all: build

# Installs only what is missing, quietly; refreshes the package lists only
# if the first attempt cannot find something.
define install_missing
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } || \
	  { echo "apt-get could not install:$$missing" >&2; exit 1; }; \
	fi
endef

deps-build:
	$(call install_missing,$(BUILD_PACKAGES))

deps: deps-build
	$(call install_missing,$(TEST_PACKAGES))

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# Only the four executables (what deploy/Dockerfile builds).
binaries: deps-build
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target sluice-producer sluice-stage sluice-sink sluice-keygen

# The envelope fuzzer, built by clang with libFuzzer, ASan and UBSan.
fuzz-build: deps
	@cmake -S . -B $(FUZZ_BUILD) -DCMAKE_CXX_COMPILER=clang++ \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLUICE_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target envelope_fuzzer

demo: binaries
	@N=$(N) TOKEN_WORKERS=$(TOKEN_WORKERS) RESULT_WORKERS=$(RESULT_WORKERS) \
	 TOKEN_THREADS=$(TOKEN_THREADS) RESULT_THREADS=$(RESULT_THREADS) \
	 TOKEN_LATENCY_MS=$(TOKEN_LATENCY_MS) RESULT_LATENCY_MS=$(RESULT_LATENCY_MS) \
	 BIN=$(BUILD)/bin deploy/run-local.sh

test: fuzz-build
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	  -DSLUICE_FUZZER=$(abspath $(FUZZ_BUILD))/bin/envelope_fuzzer >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@cd $(BUILD) && ctest --output-on-failure --timeout 600 -j $(JOBS) $(CTEST_ARGS)

# A longer fuzzing run (FUZZ_SECONDS), keeping its corpus in build-fuzz/.
fuzz: fuzz-build
	@mkdir -p $(FUZZ_BUILD)/corpus
	@$(FUZZ_BUILD)/bin/envelope_fuzzer -max_total_time=$(FUZZ_SECONDS) \
	  -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
	  $(FUZZ_BUILD)/corpus tests/fuzz/seeds

bench: build
	$(call install_missing,$(BENCH_PACKAGES))
	@$(BUILD)/bin/sluice-microbench --benchmark_min_time=0.2
	@$(BUILD)/bin/sluice-bench --items $(BENCH_ITEMS) --runs $(BENCH_RUNS)

install: binaries
	@cmake --build $(BUILD) -j $(JOBS) --target sluice_stage_main
	@cmake --install $(BUILD) --prefix $(PREFIX)

# The container image (deploy/Dockerfile); starts Docker if needed.
image:
	@deploy/docker-env.sh
	@docker build -q -f deploy/Dockerfile -t sluice:$(VERSION) -t sluice:latest . >/dev/null
	@echo "built sluice:$(VERSION)"

clean:
	rm -rf $(BUILD) $(FUZZ_BUILD)
