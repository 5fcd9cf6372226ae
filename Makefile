# msxsync: common tasks. `make test` is the test command CI runs.
CARGO ?= cargo

.PHONY: build test release roms check-roms bench demo clean

build:
	$(CARGO) build

test:
	$(CARGO) test

# An optimized msxsync that runs from any folder (the demo game is built in).
release:
	$(CARGO) build --release
	@echo "built $(abspath $(or $(CARGO_TARGET_DIR),target))/release/msxsync (copy it anywhere; it needs openMSX and C-BIOS to play)"

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
