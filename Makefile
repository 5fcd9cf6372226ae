# msxsync: common tasks. `make test` is the test command CI runs.
CARGO ?= cargo

.PHONY: build test test-repeat release dist dist-smoke roms check-roms bench demo clean

build:
	$(CARGO) build

test:
	$(CARGO) test

# `make test` N times in a row (default 10), stopping at the first failure; prints each
# run's result and wall time, then how many passed. For checking that the tests hold on
# a loaded machine, e.g. while `stress-ng --cpu 2` runs. Builds once first, so the
# times are those of the tests.
N ?= 10
REPEAT_LOG = $(or $(CARGO_TARGET_DIR),target)/test-repeat.log
test-repeat:
	@$(CARGO) test --no-run -q
	@pass=0; \
	for i in $$(seq 1 $(N)); do \
		start=$$(date +%s.%N); \
		if $(MAKE) --no-print-directory test > $(REPEAT_LOG) 2>&1; then ok=pass; else ok=FAIL; fi; \
		secs=$$(awk "BEGIN { printf \"%.1f\", $$(date +%s.%N) - $$start }"); \
		echo "run $$i/$(N): $$ok in $$secs s"; \
		if [ $$ok = FAIL ]; then \
			grep -E 'panicked|FAILED|failures:' $(REPEAT_LOG) | head -20; \
			echo "$$pass of $(N) runs passed; the failing run's output is in $(REPEAT_LOG)"; \
			exit 1; \
		fi; \
		pass=$$((pass + 1)); \
	done; \
	echo "$$pass of $(N) runs passed"

# An optimized msxsync that runs from any folder (the demo game is built in).
release:
	$(CARGO) build --release
	@echo "built $(abspath $(or $(CARGO_TARGET_DIR),target))/release/msxsync (copy it anywhere; it needs openMSX and C-BIOS to play)"

# The downloadable release in dist/: static Linux x86_64 (and aarch64), Windows x86_64;
# one bare binary and one archive (binary, README, LICENSE, games/) each, SHA256SUMS.
# Targets whose cross toolchain is missing are skipped with a warning; DIST_TARGETS
# picks some, e.g. make dist DIST_TARGETS=linux-x86_64. See scripts/dist.sh.
dist:
	scripts/dist.sh $(DIST_TARGETS)

# Runs what `make dist` built as a player would: --version, check, serve + list on
# 127.0.0.1; aarch64 under qemu-aarch64 and Windows under wine when installed.
dist-smoke:
	scripts/dist-smoke.sh

# The built-in co-op demo: a server on 127.0.0.1 and two openMSX players. With a display,
# two windows to play in (Ctrl-C ends it); without one or with CI=true, a scripted
# headless session that checks player 2 gets player 1's items and saves screenshots in
# target/demo. Installs openMSX and C-BIOS with apt-get when missing. DEMO_ARGS goes to
# the demo, e.g. make demo DEMO_ARGS=--headless.
demo:
	scripts/demo.sh $(DEMO_ARGS)

# Assemble every Z80 source that has a committed ROM next to it (needs pasmo).
ASM_SOURCES := $(wildcard tests/roms/*.asm games/demo/*.asm)
roms: $(ASM_SOURCES:.asm=.rom)

%.rom: %.asm
	pasmo --bin $< $@

# Benchmarks (release build, a few minutes): prints a table, rewrites docs/benchmarks.md
# and bench/results.json. Not part of `make test`.
bench:
	$(CARGO) bench --bench sync

clean:
	$(CARGO) clean
