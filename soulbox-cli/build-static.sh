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

repo_dir=$(cd "$(dirname "$0")/.." && pwd)
host=$(rustc -vV | sed -n 's/^host: //p')
case $host in
    *-linux-gnu*) ;;
    *) echo "build-static.sh: static builds need a GNU/Linux host, this one is $host" >&2; exit 1 ;;
esac
target_dir=${CARGO_TARGET_DIR:-$repo_dir/target}

(
    cd "$repo_dir"
    # Appended to the caller's flags, which would otherwise replace the
    # configuration's.
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release -p soulbox-cli --target "$host" "$@" >&2
)
binary=$target_dir/$host/release/soulbox
# A static executable has no program interpreter (the dynamic loader).
if readelf -l "$binary" | grep -q INTERP; then
    echo "build-static.sh: $binary is dynamically linked; check that RUSTFLAGS does not turn crt-static off" >&2
    exit 1
fi
echo "$binary"
