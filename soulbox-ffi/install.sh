#!/usr/bin/env bash
# Installs libsoulbox.so, libsoulbox.a, soulbox.h and soulbox.pc.
#
# The shared library goes in as libsoulbox.so.VERSION, with the links
# libsoulbox.so.MAJOR (its SONAME, which linked programs look for) and
# libsoulbox.so (which the linker's -lsoulbox finds) pointing at it.
#
# Usage: soulbox-ffi/install.sh [--prefix DIR] [--build-dir DIR] [--no-build]
#
#   --prefix DIR     install under DIR (default /usr/local): the libraries
#                    in DIR/lib, the header in DIR/include and soulbox.pc
#                    in DIR/lib/pkgconfig
#   --build-dir DIR  take the libraries from DIR (default: cargo's release
#                    directory, target/release or $CARGO_TARGET_DIR/release)
#   --no-build       do not run `cargo build --release -p soulbox-ffi` first
#
# DESTDIR, when set, is prepended to every installed path (for packaging);
# soulbox.pc still names the paths without it. After installing into a
# system directory such as /usr/local/lib, run ldconfig.
set -euo pipefail

crate_dir=$(cd "$(dirname "$0")" && pwd)
repo_dir=$(dirname "$crate_dir")
prefix=/usr/local
build_dir=${CARGO_TARGET_DIR:-$repo_dir/target}/release
build=true

usage() {
    sed -n '2,19s/^# \{0,1\}//p' "$0" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || usage; prefix=$2; shift 2 ;;
        --build-dir) [ $# -ge 2 ] || usage; build_dir=$2; shift 2 ;;
        --no-build) build=false; shift ;;
        *) echo "install.sh: unknown option $1" >&2; usage ;;
    esac
done
case $prefix in
    /*) ;;
    *) echo "install.sh: --prefix must be an absolute path, got $prefix" >&2; exit 2 ;;
esac

if $build; then
    (cd "$repo_dir" && cargo build --release -p soulbox-ffi)
fi
for library in libsoulbox.so libsoulbox.a; do
    if [ ! -f "$build_dir/$library" ]; then
        echo "install.sh: $build_dir/$library is missing; build it with" \
            "'cargo build --release -p soulbox-ffi' or pass --build-dir" >&2
        exit 1
    fi
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo_dir/Cargo.toml" | head -n 1)
major=${version%%.*}
libdir=$prefix/lib
includedir=$prefix/include
destdir=${DESTDIR:-}

install -d "$destdir$libdir/pkgconfig" "$destdir$includedir"
install -m 0755 "$build_dir/libsoulbox.so" "$destdir$libdir/libsoulbox.so.$version"
ln -sfn "libsoulbox.so.$version" "$destdir$libdir/libsoulbox.so.$major"
ln -sfn "libsoulbox.so.$version" "$destdir$libdir/libsoulbox.so"
install -m 0644 "$build_dir/libsoulbox.a" "$destdir$libdir/libsoulbox.a"
install -m 0644 "$crate_dir/include/soulbox.h" "$destdir$includedir/soulbox.h"
sed -e "s|@PREFIX@|$prefix|" -e "s|@LIBDIR@|$libdir|" \
    -e "s|@INCLUDEDIR@|$includedir|" -e "s|@VERSION@|$version|" \
    "$crate_dir/soulbox.pc.in" >"$destdir$libdir/pkgconfig/soulbox.pc"
chmod 0644 "$destdir$libdir/pkgconfig/soulbox.pc"
echo "installed libsoulbox $version under $destdir$prefix"
