#!/usr/bin/env bash
# Builds the `soulbox` command as a static executable and prints its path.
#
# Usage: soulbox-cli/build-static.sh [CARGO_BUILD_ARGS...]
#
# `cargo build --release -p soulbox-cli` links `soulbox` against the shared
# C library. A static build starts faster, because the dynamic loader maps
# no libraries and looks up no symbols: `soulbox run -- /bin/true` took
# 0.36 ms less in interleaved runs on the benchmark host (BENCHMARKS.md).
#
# Cargo applies RUSTFLAGS to every crate of an explicit `--target` build
# except build scripts and proc macros, which must stay dynamic. No crate
# that `soulbox` depends on is a shared library, so `+crt-static` applies to
# all of them. The build therefore has its own directory,
# target/TRIPLE/release, apart from `cargo build --release`.
#
# Cargo's output goes to stderr, the path of the binary to stdout.
set -euo pipefail

for tool in cargo rustc readelf; do
    if ! command -v "$tool" > /dev/null; then
        echo "build-static.sh: $tool not found on PATH; install a Rust toolchain (rustup.rs) and binutils" >&2
        exit 1
    fi
done
repo_dir=$(cd "$(dirname "$0")/.." && pwd)
host=$(rustc -vV | sed -n 's/^host: //p')
case $host in
    *-linux-gnu*) ;;
    *) echo "build-static.sh: static builds need a GNU/Linux host, this one is $host" >&2; exit 1 ;;
esac
# Cargo takes a relative CARGO_TARGET_DIR from its working directory, which
# below is the repository, so it is made absolute against the caller's.
case ${CARGO_TARGET_DIR:-/} in
    /*) ;;
    *) export CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR" ;;
esac

# Cargo prints one JSON message per built crate on stdout, and the one for
# the `soulbox` binary names the file wherever the target directory is
# (CARGO_TARGET_DIR, a configuration file or a --target-dir argument).
messages=$(
    cd "$repo_dir"
    # Appended to the caller's flags, so that a caller's RUSTFLAGS cannot
    # turn crt-static off. Setting RUSTFLAGS makes cargo ignore the
    # `build.rustflags` of configuration files.
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release -p soulbox-cli --target "$host" \
        --message-format=json-render-diagnostics "$@"
)
binary=$(printf '%s\n' "$messages" |
    sed -n 's/.*"executable":"\([^"]*\/soulbox\)".*/\1/p' | tail -n 1)
if [ -z "$binary" ]; then
    echo "build-static.sh: cargo built no soulbox executable" >&2
    exit 1
fi
# A static executable has no program interpreter (the dynamic loader). The
# headers are read first, so that a readelf error fails the script.
headers=$(readelf -l "$binary")
if grep -q INTERP <<< "$headers"; then
    echo "build-static.sh: $binary is dynamically linked; check that CARGO_ENCODED_RUSTFLAGS, which replaces RUSTFLAGS, is not set" >&2
    exit 1
fi
echo "$binary"
