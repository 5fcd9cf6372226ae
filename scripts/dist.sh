#!/usr/bin/env bash
# `make dist`: the downloadable release in dist/. For each target: the bare binary (to
# download and run), and an archive (tar.gz for Linux, zip for Windows) holding the
# binary, README.md, LICENSE and the games/ definitions; then SHA256SUMS over all of
# them. Built with the `dist` profile of Cargo.toml (stripped, LTO).
#
#   scripts/dist.sh [linux-x86_64] [linux-aarch64] [windows-x86_64]   (default: all three)
#
# linux-x86_64 is required: a static musl build, or, when the musl target cannot be
# installed, a static glibc build (said loudly; see fallback_note below). The other two
# are skipped with a warning when their cross toolchain is missing (set-up: README,
# "Building the release binaries"). Exits non-zero when a requested target failed to
# build or a Linux binary is not static.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
OUT=dist

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(linux-x86_64 linux-aarch64 windows-x86_64)

say() { echo "dist: $*"; }
warn() { echo "dist: WARNING: $*" >&2; }

# Whether the Rust standard library for $1 is installed; if not, asks rustup for it.
# Installing a target downloads it from the Rust project, which may be unreachable.
have_target() {
    local sysroot
    sysroot=$(rustc --print sysroot)
    [ -d "$sysroot/lib/rustlib/$1" ] && return 0
    command -v rustup >/dev/null 2>&1 || return 1
    say "installing the Rust target $1 (rustup target add $1)"
    rustup target add "$1" >&2
}

# Builds msxsync for $1 (extra environment in the rest of the arguments); prints the
# binary's path.
build() {
    local target=$1
    shift
    say "building $target (profile dist)" >&2
    env "$@" "$CARGO" build --locked --profile dist --bin msxsync --target "$target" >&2
    echo "$TARGET_DIR/$target/dist/msxsync"
}

# Fails unless the Linux binary $1 is static (no program interpreter, no libraries).
# `file` knows every architecture; without it, ldd (which only knows this machine's).
check_static() {
    local what
    if command -v file >/dev/null 2>&1; then
        what=$(file -b "$1")
    else
        what="ldd: $(ldd "$1" 2>&1 || true)"
    fi
    say "$(basename "$1"): $what"
    case "$what" in
        *"statically linked"* | *"static-pie linked"* | *"not a dynamic executable"*) ;;
        *) echo "dist: $1 is not a static executable: $what" >&2; return 1 ;;
    esac
}

# Puts binary $1 into dist/ as $2 (the bare download), and packs it as $3 with
# README.md, LICENSE and games/ into an archive of kind $4 (tar.gz or zip) named after
# $2 and holding one folder of that name.
release() {
    local bin=$1 download=$2 inside=$3 kind=$4
    local folder=${download%.exe}
    local stage="$TARGET_DIR/dist-stage"
    cp "$bin" "$OUT/$download"
    rm -rf "$stage"
    mkdir -p "$stage/$folder"
    cp "$bin" "$stage/$folder/$inside"
    cp README.md LICENSE "$stage/$folder/"
    cp -r games "$stage/$folder/games"
    local archive
    archive=$(realpath "$OUT")/$folder.$kind
    if [ "$kind" = zip ]; then
        if command -v zip >/dev/null 2>&1; then
            (cd "$stage" && zip -qr "$archive" "$folder")
        else
            (cd "$stage" && python3 -m zipfile -c "$archive" "$folder")
        fi
    else
        tar -C "$stage" --owner=0 --group=0 -czf "$archive" "$folder"
    fi
    rm -rf "$stage"
    built+=("$download: $(stat -c %s "$OUT/$download") bytes; $(basename "$archive")")
}

# Whether cross target $1 can be built: its linker $2 (Debian package $3) and the Rust
# target $4 are there; if not, says why and notes it as skipped.
cross_ready() {
    if ! command -v "$2" >/dev/null 2>&1; then
        warn "skipping $1: no $2 (apt install $3)"
    elif ! have_target "$4"; then
        warn "skipping $1: the Rust target $4 is not available"
    else
        return 0
    fi
    skipped+=("$1")
    return 1
}

fallback_note="a glibc build with crt-static: it runs on any x86_64 Linux, but glibc \
looks up host names (--server NAME) through NSS libraries it loads at run time, which \
must then be the same glibc version as the build machine's; where they differ, give \
the server as an IP address"

rm -rf "$OUT"
mkdir -p "$OUT"
built=()
skipped=()
failed=0
for want in "${wanted[@]}"; do
    case "$want" in
        linux-x86_64)
            if have_target x86_64-unknown-linux-musl; then
                bin=$(build x86_64-unknown-linux-musl)
                name=msxsync-$VERSION-x86_64-linux
            else
                warn "the Rust target x86_64-unknown-linux-musl is not available; falling back to $fallback_note"
                bin=$(build x86_64-unknown-linux-gnu \
                    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static")
                name=msxsync-$VERSION-x86_64-linux-glibc-static
            fi
            check_static "$bin" || failed=1
            release "$bin" "$name" msxsync tar.gz
            ;;
        linux-aarch64)
            linker=aarch64-linux-gnu-gcc
            cross_ready "$want" "$linker" gcc-aarch64-linux-gnu aarch64-unknown-linux-musl || continue
            bin=$(build aarch64-unknown-linux-musl CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER="$linker")
            check_static "$bin" || failed=1
            release "$bin" "msxsync-$VERSION-aarch64-linux" msxsync tar.gz
            ;;
        windows-x86_64)
            cross_ready "$want" x86_64-w64-mingw32-gcc gcc-mingw-w64-x86-64 x86_64-pc-windows-gnu || continue
            bin=$(build x86_64-pc-windows-gnu)
            command -v file >/dev/null 2>&1 && say "$(basename "$bin").exe: $(file -b "$bin.exe")"
            release "$bin.exe" "msxsync-$VERSION-x86_64-windows.exe" msxsync.exe zip
            ;;
        *)
            echo "dist: unknown target '$want' (linux-x86_64, linux-aarch64, windows-x86_64)" >&2
            exit 2
            ;;
    esac
done

(cd "$OUT" && sha256sum -- * >SHA256SUMS)
say "built in $OUT/:"
for b in "${built[@]}"; do say "  $b"; done
[ ${#skipped[@]} -eq 0 ] || warn "not built: ${skipped[*]}"
say "checksums in $OUT/SHA256SUMS"
exit "$failed"
