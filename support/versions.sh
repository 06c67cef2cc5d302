# SPDX-License-Identifier: GPL-2.0
# Pinned versions and cache locations, sourced by the support scripts.
# shellcheck shell=bash

: "${VMSG_CACHE:=/var/cache/virtio-msg}"

EXTRA_SUITES="trixie trixie-backports"
BACKPORTS=trixie-backports

LINUX_SERIES=7.2
LINUX_SOURCE_VERSION=7.2.12-1~bpo13+1
LINUX_TARBALL=/usr/src/linux-source-$LINUX_SERIES.tar.xz

RUST_SRC_VERSION=1.95.0+dfsg1-2~bpo13+1
RUST_LIB_SRC=/usr/src/rustc-1.95.0/library

BINDGEN_VERSION=0.72.1
BINDGEN=$VMSG_CACHE/cargo/bin/bindgen
LIBCLANG_PATH=/usr/lib/llvm-19/lib

HOST_PACKAGES="make gcc ccache libc6-dev python3 flex bison bc cpio xz-utils patch rsync libelf-dev libclang-19-dev busybox-static mmdebstrap python3-ply python3-git"
# The KASAN guest (make kasan): Rust with KASAN needs the kernel built with clang.
KASAN_PACKAGES="clang-19 lld-19 llvm-19"
KASAN_LLVM=-19
QEMU_PACKAGES="qemu-system-x86 qemu-system-common qemu-system-data seabios"
QEMU_ROOT=$VMSG_CACHE/qemu-root

# ccache for the C side of every kernel build (support/kernel.sh, series.sh):
# the cache is kept with the others, and paths under a clone are hashed
# relative to it (CCACHE_BASEDIR, set by the scripts), so a fresh clone of the
# same tree compiles no C file twice. Rust has no such cache.
CCACHE_DIR=$VMSG_CACHE/ccache
: "${CCACHE_MAXSIZE:=8G}"

export VMSG_CACHE RUST_LIB_SRC LIBCLANG_PATH CCACHE_DIR CCACHE_MAXSIZE
