#!/usr/bin/env bash
# Installs the `soulbox` command, linked statically (see build-static.sh).
#
# Usage: soulbox-cli/install.sh [--prefix DIR]
#
#   --prefix DIR  install as DIR/bin/soulbox (default /usr/local); also --prefix=DIR
#
# DESTDIR, when set, is prepended to the installed path (for packaging).
set -euo pipefail

crate_dir=$(cd "$(dirname "$0")" && pwd)
prefix=/usr/local

# Prints the usage above, to stdout for --help and else to stderr, and
# exits with status $1.
usage() {
    if [ "$1" -eq 0 ]; then
        sed -n '2,8s/^# \{0,1\}//p' "$0"
    else
        sed -n '2,8s/^# \{0,1\}//p' "$0" >&2
    fi
    exit "$1"
}
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || usage 2; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        -h | --help) usage 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
    esac
done
case $prefix in
    /*) ;;
    *) echo "install.sh: --prefix must be an absolute path, got $prefix" >&2; exit 2 ;;
esac

binary=$(bash "$crate_dir/build-static.sh")
destdir=${DESTDIR:-}
install -d "$destdir$prefix/bin"
install -m 0755 "$binary" "$destdir$prefix/bin/soulbox"
echo "installed $("$binary" --version) as $destdir$prefix/bin/soulbox"
