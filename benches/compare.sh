#!/usr/bin/env bash
# compare.sh: SoulBox side by side with peer sandbox runtimes, measured in one
# run with the runtimes interleaved.
#
#   sudo bash benches/compare.sh
#   sudo ONLY_PEERS=1 ROUNDS=2 RUNS=5 bash benches/compare.sh   # quick, no SoulBox
#
# Each row times one task end to end: create a sandbox, run the command in it,
# and tear the sandbox down.
#   true: /bin/true, from a busybox-static root filesystem for the peers;
#   py:   /usr/bin/python3 -c 'print(1)', with the host's /usr, /lib, /lib64,
#         /bin and /etc bound read-only for the peers.
# Rows: SoulBox through its Rust API (soulbox-bench-api, which times itself
# in-process), SoulBox through its CLI (soulbox run), bubblewrap, crun, and the
# bare command without any sandbox as the floor. Commands other than the API
# are timed by hyperfine -N (no shell in between).
#
# Knobs (environment variables):
#   ROUNDS=5       rounds; the order of the rows rotates every round
#   RUNS=20        timed runs per row per round (also the API's iterations)
#   WARMUP=3       untimed runs per row per round, before the timed ones
#   ONLY_PEERS=0   1 skips the SoulBox rows, so no SoulBox build is needed
#   SKIP_BUILD=0   1 skips cargo build and uses the binaries already built
#   TARGET_DIR     cargo's target directory (default $CARGO_TARGET_DIR, else target/ in the repository)
#   SOULBOX_CLI    soulbox binary (default $TARGET_DIR/release/soulbox)
#   SOULBOX_API    soulbox-bench-api binary (default $TARGET_DIR/release/soulbox-bench-api)
#   SOULBOX_RUN_OPTS  extra options for `soulbox run`, placed before `--` (default none)
#   OUT            report path (default benches/results/compare-YYYY-MM-DD.md, UTC date)
#
# Needs root. Installs bubblewrap, crun, runc (only `runc spec` is used),
# busybox-static and hyperfine from Debian's apt when missing. Building as root
# leaves root-owned files in target/, so a non-root user may prefer to build
# first and then run `sudo SKIP_BUILD=1 bash benches/compare.sh`.
#
# Everything temporary lives in one mktemp -d directory that is removed at exit.
# Containers are named sbxcmp-<script pid>-<task>. After each crun row and at
# exit, the script deletes its crun containers and the empty child cgroups that
# crun left with that name prefix. Other runs' containers are not touched.
#
# crun 1.8.1 (Debian 12) rejects hybrid cgroup hosts, where the v2 hierarchy at
# /sys/fs/cgroup/unified lists a controller ("cgroups in hybrid mode not
# supported, drop all controllers from cgroupv2"). On such a host each crun
# command runs in a private mount namespace (unshare -m --propagation private)
# in which an empty file is bind-mounted over that cgroup.controllers file. No
# host cgroup changes, and the other rows run without this namespace.
set -euo pipefail
export LC_ALL=C

ROUNDS=${ROUNDS:-5}
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
ONLY_PEERS=${ONLY_PEERS:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
SOULBOX_RUN_OPTS=${SOULBOX_RUN_OPTS:-}

REPO=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${TARGET_DIR:-${CARGO_TARGET_DIR:-$REPO/target}}
SOULBOX_CLI=${SOULBOX_CLI:-$TARGET_DIR/release/soulbox}
SOULBOX_API=${SOULBOX_API:-$TARGET_DIR/release/soulbox-bench-api}
OUT=${OUT:-$REPO/benches/results/compare-$(date -u +%F).md}

# Name prefix of this run's containers and of the cgroups crun makes for them.
RUN_PREFIX=sbxcmp-$$
CGROUP_V2_CONTROLLERS=/sys/fs/cgroup/unified/cgroup.controllers
PY_ARGS="/usr/bin/python3 -c 'print(1)'"
WORK=""

log() { printf '[compare %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
# Appends a line to the report's notes and logs it.
note() {
    printf '%s\n' "$*" >>"$WORK/notes.txt"
    log "note: $*"
}

# ---------------------------------------------------------------- checks, install, build

check_knobs() {
    [ "$(id -u)" -eq 0 ] || die "must run as root, because it creates namespaces and crun containers: run 'sudo bash $0'"
    local knob
    for knob in ROUNDS RUNS WARMUP; do
        [[ ${!knob} =~ ^[0-9]+$ ]] || die "$knob must be a non-negative integer, got '${!knob}'"
    done
    [ "$ROUNDS" -ge 1 ] || die "ROUNDS must be at least 1, got $ROUNDS"
    [ "$RUNS" -ge 1 ] || die "RUNS must be at least 1, got $RUNS"
}

install_missing() {
    local packages=(bubblewrap crun runc busybox-static hyperfine python3 util-linux)
    local missing=() package
    for package in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$package")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build_soulbox() {
    if [ "$SKIP_BUILD" != 1 ]; then
        command -v cargo >/dev/null ||
            die "cargo not found in PATH: build as your user with 'cargo build --release -p soulbox-cli -p soulbox-benches', then rerun with SKIP_BUILD=1"
        log "cargo build --release -p soulbox-cli -p soulbox-benches"
        (cd "$REPO" && cargo build --release -p soulbox-cli -p soulbox-benches)
    fi
    [ -x "$SOULBOX_CLI" ] || die "soulbox CLI not found at $SOULBOX_CLI (set SOULBOX_CLI, or ONLY_PEERS=1)"
    [ -x "$SOULBOX_API" ] || die "soulbox-bench-api not found at $SOULBOX_API (set SOULBOX_API, or ONLY_PEERS=1)"
}

# ---------------------------------------------------------------- cleanup

# Runs a command the way crun must run on this host (see the header). The
# controllers file is read, because cgroupfs reports a size of 0 for it.
with_crun_workaround() {
    if [ -n "$(cat "$CGROUP_V2_CONTROLLERS" 2>/dev/null)" ]; then
        # shellcheck disable=SC2016 # $0, $1 and $@ belong to the inner bash
        unshare -m --propagation private -- bash -c \
            'mount --bind "$0" "$1" && shift && exec "$@"' \
            "$WORK/empty" "$CGROUP_V2_CONTROLLERS" "$@"
    else
        "$@"
    fi
}

# Deletes this run's crun containers and their empty child cgroups. A cgroup
# that still has processes is left in place and logged.
cleanup_containers() {
    local id dir
    if command -v crun >/dev/null; then
        for id in $(crun list -q 2>/dev/null | grep "^$RUN_PREFIX-" || true); do
            with_crun_workaround crun delete -f "$id" >/dev/null 2>&1 || log "crun delete -f $id failed"
        done
    fi
    while IFS= read -r dir; do
        if [ -z "$(cat "$dir/cgroup.procs" 2>/dev/null)" ]; then
            rmdir "$dir" 2>/dev/null || log "cannot remove cgroup $dir"
        else
            log "cgroup $dir still has processes, left in place"
        fi
    done < <(find /sys/fs/cgroup -mindepth 1 -maxdepth 6 -type d -name "$RUN_PREFIX-*" 2>/dev/null | sort -r)
}

on_exit() {
    local status=$?
    trap - EXIT INT TERM
    [ "$status" -eq 0 ] || log "exit status $status: removing this run's containers and temporary files"
    cleanup_containers
    [ -z "$WORK" ] || rm -rf "$WORK"
    exit "$status"
}

# ---------------------------------------------------------------- root filesystems, bundles

prepare_rootfs() {
    local busybox
    busybox=$(command -v busybox) || die "busybox not found; install busybox-static"
    if ldd "$busybox" >/dev/null 2>&1; then
        die "$busybox is linked dynamically, so it cannot run in an empty rootfs; install busybox-static"
    fi
    # busybox --install without -s makes one hard link per applet, /bin/true among them.
    mkdir -p "$WORK/rootfs/bin" "$WORK/rootfs"/{proc,dev,sys,tmp,etc}
    cp "$busybox" "$WORK/rootfs/bin/busybox"
    "$WORK/rootfs/bin/busybox" --install "$WORK/rootfs/bin"
    # Mount points only: the host directories are bound over them read-only.
    mkdir -p "$WORK/rootfs-host"/{usr,lib,lib64,bin,etc,proc,dev,sys,tmp}
    : >"$WORK/empty"
}

# Writes the OCI bundles. They keep the defaults of `runc spec` (pid, network,
# ipc, uts and mount namespaces, masked /proc paths, /dev) except for the
# changes that make_bundle.py makes.
prepare_bundles() {
    (cd "$WORK" && runc spec && mv config.json spec-default.json)
    cat >"$WORK/make_bundle.py" <<'EOF'
import json
import sys

# make_bundle.py SPEC BUNDLE_DIR ROOTFS HOST_BINDS(yes|no) ARG...
spec_path, bundle_dir, rootfs, host_binds, *args = sys.argv[1:]
with open(spec_path) as f:
    config = json.load(f)
config["process"]["terminal"] = False
config["process"]["args"] = args
config["process"]["env"] = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/"]
config["root"] = {"path": rootfs, "readonly": True}
config["hostname"] = "sandbox"
# Neither task needs the cgroupfs mount at /sys/fs/cgroup.
config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/sys/fs/cgroup"]
if host_binds == "yes":
    for path in ["/usr", "/lib", "/lib64", "/bin", "/etc"]:
        config["mounts"].append({"destination": path, "type": "bind", "source": path,
                                 "options": ["rbind", "ro", "nosuid", "nodev"]})
with open(bundle_dir + "/config.json", "w") as f:
    json.dump(config, f, indent=1)
EOF
    mkdir -p "$WORK/bundles/true" "$WORK/bundles/py"
    python3 "$WORK/make_bundle.py" "$WORK/spec-default.json" "$WORK/bundles/true" "$WORK/rootfs" no /bin/true
    python3 "$WORK/make_bundle.py" "$WORK/spec-default.json" "$WORK/bundles/py" "$WORK/rootfs-host" yes \
        /usr/bin/python3 -c 'print(1)'
}

# ---------------------------------------------------------------- rows

# Fills ROWS with "task|label|kind|command" lines. kind is one of:
#   exec  timed by hyperfine -N;
#   crun  the same, inside with_crun_workaround;
#   api   soulbox-bench-api, which prints its own times.
# hyperfine -N splits a command into words like a POSIX shell, without running one.
define_rows() {
    local bwrap_host="--ro-bind /usr /usr --ro-bind /lib /lib --ro-bind /lib64 /lib64"
    bwrap_host+=" --ro-bind /bin /bin --ro-bind /etc /etc"
    local soulbox_run="$SOULBOX_CLI run $SOULBOX_RUN_OPTS --"
    soulbox_run=${soulbox_run//  / }
    ROWS=()
    if [ "$ONLY_PEERS" != 1 ]; then
        # The default sandbox joins memory and pids cgroups; the no-limits
        # row shows what that costs, and compares with bubblewrap, which
        # creates no cgroup at all.
        ROWS+=("true|SoulBox API|api|$SOULBOX_API --task true"
            "true|SoulBox API, no limits|api|$SOULBOX_API --task true --no-limits"
            "true|SoulBox CLI|exec|$soulbox_run /bin/true"
            "py|SoulBox API|api|$SOULBOX_API --task py"
            "py|SoulBox API, no limits|api|$SOULBOX_API --task py --no-limits"
            "py|SoulBox CLI|exec|$soulbox_run $PY_ARGS")
    fi
    ROWS+=("true|bubblewrap|exec|bwrap --unshare-all --ro-bind $WORK/rootfs / --proc /proc --dev /dev /bin/true"
        "true|crun|crun|crun run --bundle $WORK/bundles/true $RUN_PREFIX-true"
        "true|bare /bin/true|exec|/bin/true"
        "py|bubblewrap|exec|bwrap --unshare-all $bwrap_host --proc /proc --dev /dev $PY_ARGS"
        "py|crun|crun|crun run --bundle $WORK/bundles/py $RUN_PREFIX-py"
        "py|bare python3|exec|$PY_ARGS")
}

# Runs one row's command once and checks its output: nothing for true, "1"
# for py, and one integer line for the API. A failing SoulBox row stops the
# script, and a failing peer row is dropped with a note.
smoke_test() {
    local row task label kind command expected output status kept=()
    for row in "${ROWS[@]}"; do
        IFS='|' read -r task label kind command <<<"$row"
        expected=""
        [ "$task" = py ] && expected=1
        status=0
        case $kind in
        exec) output=$(bash -c "$command" </dev/null 2>"$WORK/smoke.err") || status=$? ;;
        crun) output=$(with_crun_workaround bash -c "$command" </dev/null 2>"$WORK/smoke.err") || status=$? ;;
        api)
            output=$($command --iterations 1 </dev/null 2>"$WORK/smoke.err") || status=$?
            [[ $output =~ ^[0-9]+$ ]] && expected=$output
            ;;
        esac
        if [ "$status" -eq 0 ] && [ "$output" = "$expected" ]; then
            kept+=("$row")
            printf '%s\t%s\t%s\n' "$task" "$label" "$command" >>"$WORK/commands.tsv"
            continue
        fi
        local problem="$task/$label: smoke run of '$command' failed, exit status $status"
        problem+=", output '${output:0:80}', expected '$expected', stderr '$(tr '\n' ' ' <"$WORK/smoke.err" | cut -c1-300)'"
        case $label in
        SoulBox*) die "$problem" ;;
        *) note "$problem; row dropped" ;;
        esac
    done
    cleanup_containers
    ROWS=("${kept[@]}")
}

# ---------------------------------------------------------------- timing

# Times every row in every round. Within a round each task's rows run one
# after the other, starting one row later than in the round before.
time_rounds() {
    local round task rows row count i k task_name label kind command file
    mkdir -p "$WORK/times"
    : >"$WORK/manifest.tsv"
    for round in $(seq 1 "$ROUNDS"); do
        for task_name in true py; do
            rows=()
            for row in "${ROWS[@]}"; do [[ $row == "$task_name|"* ]] && rows+=("$row"); done
            count=${#rows[@]}
            [ "$count" -gt 0 ] || continue
            for i in $(seq 0 $((count - 1))); do
                k=$(((i + round - 1) % count))
                IFS='|' read -r task label kind command <<<"${rows[$k]}"
                file="$WORK/times/$task-$k-r$round"
                log "round $round/$ROUNDS, task $task: $label"
                case $kind in
                exec)
                    file+=.json
                    run_hyperfine "$file" "$label" "$command"
                    ;;
                crun)
                    file+=.json
                    run_hyperfine "$file" "$label" "$command" with_crun_workaround
                    cleanup_containers
                    ;;
                api)
                    file+=.txt
                    run_api "$file" "$command"
                    ;;
                esac
                printf '%s\t%s\t%s\t%s\t%s\n' "$task" "$label" "$kind" "$round" "$file" >>"$WORK/manifest.tsv"
            done
        done
    done
}

# Times COMMAND with hyperfine -N and exports the runs to JSON:
#   run_hyperfine JSON LABEL COMMAND [WRAPPER]
# With -i a failed run does not stop hyperfine. The report drops it and counts it.
run_hyperfine() {
    local json=$1 label=$2 command=$3 wrapper=${4:-}
    if ! $wrapper hyperfine -N -i --warmup "$WARMUP" --runs "$RUNS" --style basic \
        --time-unit millisecond --export-json "$json" -n "$label" "$command" \
        >>"$WORK/hyperfine.log" 2>&1; then
        tail -n 20 "$WORK/hyperfine.log" >&2
        die "hyperfine failed on '$command' (output above)"
    fi
}

# Runs soulbox-bench-api for WARMUP + RUNS iterations in one process and saves
# its output: run_api FILE COMMAND. The report drops the first WARMUP lines, as
# hyperfine drops its warmup runs. The output is also checked here, so a wrong
# binary fails before the remaining rounds.
run_api() {
    local file=$1 command=$2 iterations=$((WARMUP + RUNS)) lines
    $command --iterations "$iterations" >"$file" </dev/null 2>>"$WORK/api.log" ||
        die "'$command --iterations $iterations' failed: $(tail -n 5 "$WORK/api.log")"
    if grep -qvE '^[0-9]+$' "$file"; then
        die "'$command --iterations $iterations' printed a line that is not an integer number of ns: '$(grep -vE '^[0-9]+$' "$file" | head -n 1)'"
    fi
    lines=$(wc -l <"$file")
    [ "$lines" -eq "$iterations" ] ||
        die "'$command --iterations $iterations' printed $lines lines, expected $iterations (one per iteration)"
}

# ---------------------------------------------------------------- report

collect_versions() {
    local commit
    commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "none")
    {
        printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
        printf 'cpu\t%s x %s\n' "$(nproc)" "$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
        printf 'ram\t%s GiB\n' "$(awk '/^MemTotal/{printf "%.1f", $2 / 1048576}' /proc/meminfo)"
        printf 'kernel\t%s\n' "$(uname -r)"
        # shellcheck disable=SC1091 # os-release is read at run time, not linted
        printf 'os\t%s\n' "$(. /etc/os-release && echo "$PRETTY_NAME")"
        printf 'cgroup v2 controllers\t%s\n' "'$(cat "$CGROUP_V2_CONTROLLERS" 2>/dev/null || cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)'"
        if [ "$ONLY_PEERS" != 1 ]; then
            printf 'SoulBox\tcommit %s, %s\n' "$commit" "$("$SOULBOX_CLI" --version 2>/dev/null | head -n 1 || echo "soulbox --version failed")"
            printf 'rustc\t%s\n' "$(rustc --version 2>/dev/null || echo "not in PATH")"
        fi
        printf 'hyperfine\t%s\n' "$(hyperfine --version | head -n 1)"
        printf 'bubblewrap\t%s\n' "$(bwrap --version | head -n 1)"
        printf 'crun\t%s\n' "$(crun --version | head -n 1)"
        printf 'runc (for runc spec only)\t%s\n' "$(runc --version | head -n 1)"
        printf 'busybox (rootfs)\t%s\n' "$(busybox 2>&1 | head -n 1 | sed 's/ multi-call.*//')"
        printf 'python3\t%s\n' "$(/usr/bin/python3 --version 2>&1)"
    } >"$WORK/versions.tsv"
}

write_report() {
    mkdir -p "$(dirname "$OUT")"
    touch "$WORK/notes.txt"
    ROUNDS=$ROUNDS RUNS=$RUNS WARMUP=$WARMUP python3 - "$WORK" "$OUT" <<'EOF'
import json
import os
import statistics
import sys

work, out_path = sys.argv[1:]
ROUNDS, RUNS, WARMUP = (int(os.environ[k]) for k in ("ROUNDS", "RUNS", "WARMUP"))
ORDER = ["SoulBox API", "SoulBox API, no limits", "SoulBox CLI", "bubblewrap", "crun", "bare /bin/true", "bare python3"]
TASKS = {
    "true": "create + `/bin/true` + destroy",
    "py": "create + `/usr/bin/python3 -c 'print(1)'` + destroy",
}


def read_tsv(name):
    with open(os.path.join(work, name)) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def read_api_times(path):
    """Return the timed iterations of one soulbox-bench-api run, in ms.

    Every stdout line must be one integer (nanoseconds), and there must be
    WARMUP + RUNS of them. The first WARMUP lines are warmup and dropped.
    """
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    for number, line in enumerate(lines, 1):
        if not (line.isascii() and line.isdigit()):
            sys.exit(f"error: {path}:{number}: expected an integer number of ns, got {line!r}")
    expected = WARMUP + RUNS
    if len(lines) != expected:
        sys.exit(f"error: {path}: expected {expected} lines from soulbox-bench-api, got {len(lines)}")
    return [int(line) / 1e6 for line in lines[WARMUP:]]


def read_hyperfine_times(path):
    """Return (times of successful runs in ms, count of failed runs)."""
    with open(path) as f:
        (result,) = json.load(f)["results"]
    times = result["times"]
    codes = result.get("exit_codes") or [0] * len(times)
    ok = [t * 1000 for t, code in zip(times, codes) if code == 0]
    return ok, len(times) - len(ok)


def p95(xs):
    """95th percentile, linear interpolation between order statistics."""
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=20, method="inclusive")[18]


times = {}  # (task, label) -> pooled times in ms
round_medians = {}  # (task, label) -> {round: median ms}
failed = {}
for task, label, kind, round_, path in read_tsv("manifest.tsv"):
    if kind == "api":
        xs, bad = read_api_times(path), 0
    else:
        xs, bad = read_hyperfine_times(path)
    times.setdefault((task, label), []).extend(xs)
    failed[(task, label)] = failed.get((task, label), 0) + bad
    if xs:
        round_medians.setdefault((task, label), {})[int(round_)] = statistics.median(xs)

versions = dict(read_tsv("versions.tsv"))
commands = read_tsv("commands.tsv")
with open(os.path.join(work, "notes.txt")) as f:
    notes = [line.rstrip("\n") for line in f if line.strip()]


def fmt(x, digits=2):
    return "n/a" if x is None else f"{x:.{digits}f}"


def keyed_rows(task):
    return [(task, label) for label in ORDER if times.get((task, label))]


out = []
out.append("# SoulBox compared with peer sandbox runtimes\n")
out.append(
    f"Date: {versions['date']}. Machine: {versions['cpu']}, {versions['ram']} RAM, "
    f"kernel {versions['kernel']}, {versions['os']}.\n"
)
out.append(
    f"Method: `benches/compare.sh`, {ROUNDS} rounds; in each round every row gets {WARMUP} warmup "
    f"runs and {RUNS} timed runs, and the order of the rows rotates by one every round. "
    "Median and p95 are taken over the timed runs of all rounds pooled. The SoulBox API row "
    "is timed in-process by `soulbox-bench-api` and so excludes process start-up. Every other "
    "row is a whole command timed by `hyperfine -N`, so it includes exec, start-up and exit "
    "of the runtime's binary. Ratios divide the row's median by the SoulBox row's median "
    "for the same task.\n"
)
out.append("| runtime | task | n | median ms | p95 ms | ratio to SoulBox API median | ratio to SoulBox CLI median |")
out.append("|---|---|---:|---:|---:|---:|---:|")
for task in TASKS:
    api = times.get((task, "SoulBox API"))
    cli = times.get((task, "SoulBox CLI"))
    api_median = statistics.median(api) if api else None
    cli_median = statistics.median(cli) if cli else None
    for key in keyed_rows(task):
        xs = times[key]
        median = statistics.median(xs)
        ratio_api = median / api_median if api_median else None
        ratio_cli = median / cli_median if cli_median else None
        out.append(
            f"| {key[1]} | {task} | {len(xs)} | {median:.2f} | {p95(xs):.2f} "
            f"| {fmt(ratio_api)} | {fmt(ratio_cli)} |"
        )

out.append("\nTasks: " + "; ".join(f"`{t}` = {d}" for t, d in TASKS.items()) + ".\n")

out.append("## Median per round, ms\n")
out.append("| runtime | task | " + " | ".join(f"round {r}" for r in range(1, ROUNDS + 1)) + " |")
out.append("|---|---|" + "---:|" * ROUNDS)
for task in TASKS:
    for key in keyed_rows(task):
        cells = [fmt(round_medians[key].get(r)) for r in range(1, ROUNDS + 1)]
        out.append(f"| {key[1]} | {task} | " + " | ".join(cells) + " |")

out.append("\n## Commands\n")
out.append(
    "`$TMP` is the run's temporary directory. It contains the busybox-static root filesystem "
    "and the OCI bundles, which are `runc spec`'s default config with the process, a read-only "
    "root and, for py, read-only binds of the host directories.\n"
)
for task, label, command in commands:
    out.append(f"- {task}, {label}: `{command.replace(work, '$TMP')}`")
out.append(
    "\nThe crun rows run in a private mount namespace with an empty file bind-mounted over "
    "/sys/fs/cgroup/unified/cgroup.controllers when that file lists a controller, because "
    "crun 1.8.1 rejects hybrid cgroup hosts. No host cgroup is changed."
)

out.append("\n## Versions\n")
out.append("| component | version |")
out.append("|---|---|")
for name, value in versions.items():
    if name not in ("date", "ram"):
        out.append(f"| {name} | {value} |")

failures = [f"{label} ({task}): {count} failed runs dropped" for (task, label), count in failed.items() if count]
if notes or failures:
    out.append("\n## Notes from this run\n")
    out.extend(f"- {line}" for line in notes + failures)

text = "\n".join(out) + "\n"
with open(out_path, "w") as f:
    f.write(text)
print(text)
EOF
}

# ---------------------------------------------------------------- main

main() {
    check_knobs
    install_missing
    [ "$ONLY_PEERS" = 1 ] || build_soulbox
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/sbxcmp.XXXXXX")
    trap on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # hyperfine -N splits commands at whitespace, so paths must contain none.
    [[ "$WORK$SOULBOX_CLI$SOULBOX_API" != *[[:space:]\'\"]* ]] ||
        die "paths with whitespace or quotes are not supported: $WORK, $SOULBOX_CLI, $SOULBOX_API"
    : >"$WORK/notes.txt"
    if [ "$ONLY_PEERS" = 1 ]; then
        note "ONLY_PEERS=1, so the SoulBox rows were skipped"
    fi
    prepare_rootfs
    prepare_bundles
    define_rows
    smoke_test
    log "timing ${#ROWS[@]} rows: $ROUNDS rounds x ($WARMUP warmup + $RUNS timed runs)"
    time_rounds
    collect_versions
    write_report
    log "report written to $OUT"
}

main "$@"
