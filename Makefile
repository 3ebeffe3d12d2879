# snstack. `make demo` sets up a fresh Debian 12 machine and runs the main job; `make test` runs
# every test. All real work lives in ci/*.sh so CI and people run the same thing.
.PHONY: all build demo test bench clean

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
