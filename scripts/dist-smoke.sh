#!/usr/bin/env bash
# `make dist-smoke`: runs each archive in dist/ that this machine can run, as a player
# would after unpacking it: `msxsync --version`, `msxsync check` on the shipped demo,
# `msxsync serve` (from another folder, so the games/ next to the binary must be found,
# with an empty HOME) answering `msxsync list` on 127.0.0.1, and `msxsync play` getting
# as far as downloading the ROM and looking for openMSX (none is given: playing itself
# is what CI checks, with the static Linux binary and openMSX).
#
# Linux x86_64 runs natively; Linux aarch64 under qemu-aarch64 (apt install
# qemu-user) and Windows under wine (apt install wine wine64) when installed, otherwise
# it says what was not run. Wine 8 (Debian 12) lacks bcryptprimitives.dll, which
# Windows 10 and later have and Rust's standard library needs; for wine only, a
# stand-in built from scripts/wine/bcryptprimitives.c with mingw-w64 is put next to the
# unpacked .exe (it is never shipped).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
WORK=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -z "${WINEPREFIX:-}" ] || wineserver -k 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { echo "smoke: $*"; }
fail() { echo "smoke: FAILED: $*" >&2; exit 1; }

# What runs a binary of target $1 here (nothing for the machine's own).
runner() {
    case "$1" in
        linux-aarch64) echo qemu-aarch64 ;;
        windows-x86_64) echo "$WINE" ;;
    esac
}

# Runs the unpacked binary $2 of target $1 with the rest of the arguments.
run() {
    local target=$1 bin=$2
    shift 2
    $(runner "$target") "$bin" "$@"
}

# The smoke test of one unpacked release folder $2 for target $1.
smoke() {
    local target=$1 dir=$2 bin=$2/msxsync
    [ "$target" != windows-x86_64 ] || bin=$dir/msxsync.exe
    local out="$WORK/$target.out" empty="$WORK/$target.empty"
    mkdir -p "$empty" "$WORK/$target.home"

    local version
    version=$(run "$target" "$bin" --version | tr -d '\r')
    say "$target: $version"
    case "$version" in
        "msxsync $VERSION (protocol "*) ;;
        *) fail "$target: --version said '$version'" ;;
    esac

    (cd "$dir" && run "$target" "$bin" check games/demo/demo.regions) | tr -d '\r' | tee "$out"
    grep -q "^demo" "$out" || fail "$target: check did not describe the demo"

    # Serve from an empty folder with an empty HOME: the games come from next to the
    # binary, the state goes to the platform's default folder.
    local wrap
    wrap=$(runner "$target")
    # (exec: $! is then the server itself, which kill stops.)
    (cd "$empty" && HOME="$WORK/$target.home" exec $wrap "$bin" serve --bind 127.0.0.1 --port 0 \
        >"$out" 2>&1) &
    local server=$!
    pids+=("$server")
    local addr="" _
    for _ in $(seq 1 600); do
        addr=$(tr -d '\r' <"$out" | sed -n 's/.*listening on \([^ ]*\).*/\1/p' | head -n 1)
        [ -n "$addr" ] && break
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    tr -d '\r' <"$out" | sed 's/^/  serve| /'
    [ -n "$addr" ] || fail "$target: serve did not say where it listens"
    run "$target" "$bin" list --server "$addr" | tr -d '\r' | tee "$out.list" | sed 's/^/  list| /'
    grep -q "runs msxsync $VERSION (protocol" "$out.list" || fail "$target: list did not show the server's version"
    grep -q '^demo  "msxsync co-op demo (built in)"$' "$out.list" || fail "$target: list did not show the demo"
    # The games/ next to the binary was read: the shipped galious.regions is there, its
    # (commercial) ROM is not, and serve says so.
    grep -q 'galious.regions.*galious.rom not found' "$out" || fail "$target: serve did not look at the games/ next to the binary"
    # A player without openMSX: joins, downloads the ROM into the default cache, and
    # then fails saying how to get openMSX.
    if (cd "$empty" && HOME="$WORK/$target.home" run "$target" "$bin" play --server "$addr" \
        --game demo --name smoke --openmsx "$empty/no-openmsx") >"$out.play" 2>&1; then
        fail "$target: play without openMSX succeeded"
    fi
    tr -d '\r' <"$out.play" | sed 's/^/  play| /'
    grep -q "downloaded the rom" "$out.play" || fail "$target: play did not download the rom"
    grep -q "openmsx not found" "$out.play" || fail "$target: play did not say openMSX is missing"
    if [ "$target" = windows-x86_64 ]; then
        grep -q "path of openmsx.exe" "$out.play" || fail "$target: play did not say how to get openMSX on Windows"
    fi
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    say "$target: ok (--version, check, serve + list + play up to starting openMSX on 127.0.0.1)"
}

ran=()
not_run=()
for target in linux-x86_64 linux-aarch64 windows-x86_64; do
    case "$target" in
        windows-x86_64) archive=dist/msxsync-$VERSION-x86_64-windows.zip ;;
        linux-x86_64) archive=$(find dist -maxdepth 1 -name "msxsync-$VERSION-x86_64-linux*.tar.gz" 2>/dev/null | head -n 1 || true) ;;
        *) archive=dist/msxsync-$VERSION-aarch64-linux.tar.gz ;;
    esac
    if [ -z "$archive" ] || [ ! -f "$archive" ]; then
        not_run+=("$target (not built)")
        continue
    fi
    unpack="$WORK/$target"
    mkdir -p "$unpack"
    case "$archive" in
        *.zip) (cd "$unpack" && unzip -q "$ROOT/$archive") ;;
        *) tar -C "$unpack" -xzf "$archive" ;;
    esac
    dir=$(echo "$unpack"/msxsync-*)
    case "$target" in
        linux-aarch64)
            if ! command -v qemu-aarch64 >/dev/null 2>&1; then
                not_run+=("$target (no qemu-aarch64: apt install qemu-user)")
                continue
            fi
            ;;
        windows-x86_64)
            WINE=""
            for w in wine64 /usr/lib/wine/wine64 wine; do
                if command -v "$w" >/dev/null 2>&1; then WINE=$w; break; fi
            done
            if [ -z "$WINE" ] || ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1; then
                not_run+=("$target (needs wine and mingw-w64)")
                continue
            fi
            export WINEPREFIX="$WORK/wine" WINEDEBUG=-all
            x86_64-w64-mingw32-gcc -O2 -shared -o "$dir/bcryptprimitives.dll" \
                scripts/wine/bcryptprimitives.c scripts/wine/bcryptprimitives.def -ladvapi32
            ;;
    esac
    smoke "$target" "$dir"
    ran+=("$target")
done
say "ran: ${ran[*]:-nothing}"
[ ${#not_run[@]} -eq 0 ] || say "not run: ${not_run[*]}"
[ ${#ran[@]} -gt 0 ] || fail "no release archive in dist/ could be run (make dist first)"
