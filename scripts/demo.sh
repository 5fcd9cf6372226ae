#!/usr/bin/env bash
# `make demo`: build msxsync (release), make sure openMSX and C-BIOS are installed, then
# run the built-in co-op demo (examples/demo.rs): a server on 127.0.0.1 and two players.
# Arguments go to the demo, e.g. `scripts/demo.sh --headless --out DIR`.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

need=()
command -v openmsx >/dev/null 2>&1 || need+=(openmsx)
[ -d /usr/share/cbios ] || [ -d /usr/share/openmsx/systemroms/cbios ] || need+=(cbios)
if [ ${#need[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "demo: ${need[*]} missing and there is no apt-get here;" \
            "install openMSX and C-BIOS (https://openmsx.org), then run make demo again" >&2
        exit 1
    fi
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "demo: ${need[*]} missing; installing: ${sudo:+$sudo }apt-get install -y ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q "${need[@]}"
fi

echo "demo: building msxsync and the demo (release)"
$CARGO build --release --bin msxsync --example demo
exec "${CARGO_TARGET_DIR:-target}/release/examples/demo" "$@"
