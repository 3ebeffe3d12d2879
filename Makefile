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

bench:
	bash ci/bench.sh
	SKIP_BUILD=1 bash ci/bench-workers.sh

clean:
	cargo clean
