#!/usr/bin/env bash
# lifecycle.sh: times reaching a running sandbox and pausing it.
#
#   sudo bash benches/lifecycle.sh
#
# Rows:
#   exec from a fresh process: `soulbox exec ID -- /bin/true`, a new `soulbox`
#     process each run (runtime start, connect, run, exit), timed by
#     hyperfine, next to a bare /bin/true as the floor;
#   connect + /bin/true in-process: Sandbox::connect, run /bin/true, drop
#     (soulbox-bench-api --task connect);
#   pause + resume: Sandbox::pause then Sandbox::resume of an idle sandbox
#     (soulbox-bench-api --task pause-resume).
#
# Knobs: RUNS=200 timed runs per row; SKIP_BUILD=1 uses the release binaries
# already built. Needs root, hyperfine and python3.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

RUNS=${RUNS:-200}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -q -p soulbox-cli -p soulbox-benches --bin soulbox --bin soulbox-bench-api
fi
cli=$TARGET_DIR/release/soulbox
api=$TARGET_DIR/release/soulbox-bench-api
work=$(mktemp -d)
id=""
cleanup() {
    [ -z "$id" ] || "$cli" kill "$id" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# Prints "median p95" in milliseconds of the nanosecond values in file $1.
stats() {
    sort -n "$1" | awk '{ v[NR] = $1 } END {
        printf "%.3f %.3f\n", v[int((NR + 1) / 2)] / 1e6, v[int(NR * 0.95 + 0.5)] / 1e6 }'
}

id=$("$cli" create --timeout 3600)
hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$work/hyperfine.json" \
    "$cli exec $id -- /bin/true" "/bin/true" >/dev/null 2>&1
# One file of nanosecond times per hyperfine row: exec, then the floor.
python3 - "$work/hyperfine.json" "$work/exec" "$work/floor" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
for result, path in zip(results, sys.argv[2:]):
    with open(path, "w") as out:
        out.writelines(f"{int(t * 1e9)}\n" for t in result["times"])
PY
"$api" --task connect --iterations "$RUNS" >"$work/connect"
"$api" --task pause-resume --iterations "$RUNS" >"$work/pause"

row() {
    local median p95
    read -r median p95 < <(stats "$2")
    printf '| %s | %s | %s |\n' "$1" "$median" "$p95"
}
printf '| task | median (ms) | p95 (ms) |\n| --- | ---: | ---: |\n'
row '`soulbox exec ID -- /bin/true`, fresh process' "$work/exec"
row 'bare `/bin/true` (floor)' "$work/floor"
row '`Sandbox::connect` + `/bin/true` + drop, in-process' "$work/connect"
row '`pause` + `resume`, in-process' "$work/pause"
echo
echo "runs per row: $RUNS; $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; kernel $(uname -r)"
