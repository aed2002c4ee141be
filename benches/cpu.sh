#!/usr/bin/env bash
# cpu.sh: CPU time that create + /bin/true + destroy costs the whole host,
# next to its wall time, for SoulBox's API and CLI and for bubblewrap.
#
#   sudo bash benches/cpu.sh
#
# A row's CPU time is the busy time of every CPU while the row runs,
# divided by its runs. Busy means user, nice, system, irq and softirq in
# /proc/stat; idle, iowait and steal do not count. So it counts every
# process and kernel thread: the runtime, its helpers, the sandbox's
# processes and the kernel's deferred teardown work. Wall time divided by
# runs is next to it, and their ratio is how many CPUs the row kept busy
# on average. A row whose work already fills the CPUs cannot get faster
# by running more of it in parallel.
#
# The rows are those of compare.sh:
# - bare /bin/true: hyperfine -N runs the host's /bin/true, the floor of a
#   spawned command.
# - bubblewrap: hyperfine -N runs bwrap --unshare-all on a busybox root.
# - SoulBox API: soulbox-bench-api --task true on the `host` template.
# - SoulBox API, busybox root: the same on the busybox root.
# - SoulBox API, pool: the same from a warm pool of 2. Its refills run in
#   the background and count here, but not in compare.sh's pool row.
# - SoulBox CLI: hyperfine -N runs `soulbox run -- /bin/true` with the
#   static build of soulbox-cli/build-static.sh (SOULBOX_CLI overrides it).
# The rows take turns round by round. Each column of the table is the
# median of the row's rounds.
#
# Knobs: ROUNDS=3 rounds, RUNS=1000 runs per row and round, SKIP_BUILD=1
# uses the release binaries already built. Needs root, bwrap, hyperfine,
# busybox-static and python3. /proc/stat counts in clock ticks (10 ms at
# 100 Hz), so a row's CPU time is exact to about 10 ms / RUNS, and
# anything else running on the host counts too: run it on a quiet host.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
RUNS=${RUNS:-1000}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
for tool in bwrap hyperfine python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "cpu.sh: $tool not found. Install it: apt-get install bubblewrap hyperfine python3" >&2
        exit 1
    fi
done
busybox=$(command -v busybox || true)
if [ -z "$busybox" ]; then
    echo "cpu.sh: busybox not found. Install it: apt-get install busybox-static" >&2
    exit 1
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -q -p soulbox-benches --bin soulbox-bench-api
    bash soulbox-cli/build-static.sh >/dev/null
fi
api=$TARGET_DIR/release/soulbox-bench-api
cli=${SOULBOX_CLI:-$TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release/soulbox}
if [ ! -x "$cli" ]; then
    echo "cpu.sh: soulbox CLI not found at $cli. Run soulbox-cli/build-static.sh or set SOULBOX_CLI" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs"/{proc,dev,sys,tmp,etc}
cp "$busybox" "$work/rootfs/bin/busybox"
"$work/rootfs/bin/busybox" --install "$work/rootfs/bin"

rows=(
    "bare /bin/true|hyperfine|/bin/true"
    "bubblewrap|hyperfine|bwrap --unshare-all --ro-bind $work/rootfs / --proc /proc --dev /dev /bin/true"
    "SoulBox API|api|$api --task true --iterations $RUNS"
    "SoulBox API, busybox root|api|$api --task true --iterations $RUNS --template $work/rootfs"
    "SoulBox API, pool|api|$api --task true --iterations $RUNS --pool 2"
    "SoulBox CLI|hyperfine|$cli run -- /bin/true"
)

# Prints the busy and steal ticks of all CPUs, from the first line of
# /proc/stat (proc(5): user nice system idle iowait irq softirq steal).
ticks() {
    read -r _ user nice system _ _ irq softirq steal _ </proc/stat
    echo "$((user + nice + system + irq + softirq)) $steal"
}

results=$work/results
: >"$results"
for round in $(seq "$ROUNDS"); do
    for row in "${rows[@]}"; do
        IFS='|' read -r label kind command <<<"$row"
        read -r busy0 steal0 < <(ticks)
        start=$(date +%s%N)
        case $kind in
            hyperfine) hyperfine -N --runs "$RUNS" --warmup 0 --style none "$command" >/dev/null ;;
            # $command is a command line, split into words on purpose.
            # shellcheck disable=SC2086
            api) $command >/dev/null ;;
        esac
        end=$(date +%s%N)
        read -r busy1 steal1 < <(ticks)
        echo "$label|$((busy1 - busy0))|$((steal1 - steal0))|$((end - start))" >>"$results"
        echo "round $round: $label done" >&2
    done
done

python3 - "$results" "$RUNS" "$(getconf CLK_TCK)" <<'EOF'
import statistics
import sys

path, runs, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = {}
for line in open(path):
    label, busy, steal, wall_ns = line.rstrip("\n").split("|")
    cpu_ms = int(busy) * 1000 / hz / runs
    steal_ms = int(steal) * 1000 / hz / runs
    wall_ms = int(wall_ns) / 1e6 / runs
    rows.setdefault(label, []).append((cpu_ms, wall_ms, steal_ms))
print("| row | CPU ms per run | wall ms per run | CPUs busy | steal ms per run |")
print("|---|---:|---:|---:|---:|")
for label, rounds in rows.items():
    cpu = statistics.median(r[0] for r in rounds)
    wall = statistics.median(r[1] for r in rounds)
    steal = statistics.median(r[2] for r in rounds)
    print(f"| {label} | {cpu:.2f} | {wall:.2f} | {cpu / wall:.2f} | {steal:.2f} |")
EOF
