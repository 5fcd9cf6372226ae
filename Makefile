# msxsync: common tasks. `make test` is the test command CI runs.
CARGO ?= cargo

.PHONY: build test release roms check-roms bench demo clean

build:
	$(CARGO) build

test:
	$(CARGO) test

release:
	$(CARGO) build --release
	@echo "built target/release/msxsync"

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
