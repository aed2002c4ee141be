#!/usr/bin/env bash
# ffi.sh: create + run /bin/true + kill through the C ABI (libsoulbox) and
# through the Rust API, interleaved in one run.
#
#   sudo bash benches/ffi.sh
#   sudo ROUNDS=2 ITERATIONS=5 bash benches/ffi.sh   # quick
#
# Rows: benches/c/bench_ffi.c against the release libsoulbox.so, and
# soulbox-bench-api (--task true), each with default limits and with
# --no-limits. Both run /bin/true without a shell and time create, run and
# kill in-process. Every round runs each row once, as a new process of
# ITERATIONS iterations, and the order of the rows rotates every round.
# The first iteration of each process is dropped, because it also pays for
# starting the async runtime and loading PID 1's binary into a memfd.
#
# Knobs (environment variables):
#   ROUNDS=5          rounds
#   ITERATIONS=21     iterations per row per round, the first one dropped
#   SKIP_BUILD=0      1 uses the release binaries already built
#   TARGET_DIR        cargo's target directory (default $CARGO_TARGET_DIR,
#                     else target/ in the repository)
#   CC                C compiler (default cc)
#
# Needs root. Prints a Markdown table: per row the number of timed
# iterations, the median and the 95th percentile in milliseconds, and the
# ratio of the median to the Rust API's with the same limits.
set -euo pipefail
export LC_ALL=C

ROUNDS=${ROUNDS:-5}
ITERATIONS=${ITERATIONS:-21}
SKIP_BUILD=${SKIP_BUILD:-0}
CC=${CC:-cc}
REPO=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${TARGET_DIR:-${CARGO_TARGET_DIR:-$REPO/target}}
RELEASE=$TARGET_DIR/release

log() { printf '[ffi %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "creating sandboxes needs root"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS=$ROUNDS is not a positive integer"
[[ $ITERATIONS =~ ^[1-9][0-9]*$ ]] && [ "$ITERATIONS" -ge 2 ] ||
    die "ITERATIONS=$ITERATIONS is not an integer of at least 2"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [ "$SKIP_BUILD" != 1 ]; then
    log "building soulbox-ffi and soulbox-bench-api in release mode"
    (cd "$REPO" && cargo build --release -p soulbox-ffi &&
        cargo build --release -p soulbox-benches --bin soulbox-bench-api) >&2
fi
[ -f "$RELEASE/libsoulbox.so" ] || die "$RELEASE/libsoulbox.so is missing"
[ -x "$RELEASE/soulbox-bench-api" ] || die "$RELEASE/soulbox-bench-api is missing"
# The program looks the library up by its SONAME, libsoulbox.so.0, which
# cargo does not create, so it runs against a link of that name.
mkdir "$WORK/lib"
ln -s "$RELEASE/libsoulbox.so" "$WORK/lib/libsoulbox.so.0"
"$CC" -O2 -Wall -Wextra -I "$REPO/soulbox-ffi/include" "$REPO/benches/c/bench_ffi.c" \
    -L "$RELEASE" -Wl,-rpath,"$WORK/lib" -lsoulbox -o "$WORK/bench_ffi"

# Row name, then the command that prints one time in nanoseconds per line.
ROWS=(
    "C ABI, default limits|$WORK/bench_ffi --iterations $ITERATIONS"
    "Rust API, default limits|$RELEASE/soulbox-bench-api --task true --iterations $ITERATIONS"
    "C ABI, no limits|$WORK/bench_ffi --iterations $ITERATIONS --no-limits"
    "Rust API, no limits|$RELEASE/soulbox-bench-api --task true --iterations $ITERATIONS --no-limits"
)

for ((round = 0; round < ROUNDS; round++)); do
    log "round $((round + 1)) of $ROUNDS"
    for ((k = 0; k < ${#ROWS[@]}; k++)); do
        index=$(((k + round) % ${#ROWS[@]}))
        command=${ROWS[$index]#*|}
        # shellcheck disable=SC2086 # the command is split into its words on purpose
        $command | tail -n +2 >>"$WORK/row$index.ns" || die "row ${ROWS[$index]%%|*} failed"
    done
done

# Prints "count median p95" in milliseconds for the nanosecond file $1.
stats() {
    sort -n "$1" | awk '{ v[NR] = $1 }
        END {
            p95 = int(NR * 0.95 + 0.999999); if (p95 > NR) p95 = NR
            median = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%d %.2f %.2f\n", NR, median / 1e6, v[p95] / 1e6
        }'
}

echo "| row | n | median ms | p95 ms | ratio to Rust API |"
echo "|---|---:|---:|---:|---:|"
for ((index = 0; index < ${#ROWS[@]}; index++)); do
    read -r count median p95 < <(stats "$WORK/row$index.ns")
    # Rows come in pairs: C ABI, then the Rust API with the same limits.
    read -r _ rust_median _ < <(stats "$WORK/row$((index | 1)).ns")
    ratio=$(awk -v a="$median" -v b="$rust_median" 'BEGIN { printf "%.2f", a / b }')
    echo "| ${ROWS[$index]%%|*} | $count | $median | $p95 | $ratio |"
done
