#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Run the KUnit suites of drivers/virtio/.kunitconfig with the kernel's own
# runner: tools/testing/kunit/kunit.py run --arch=x86_64, in build/kunit.
#
# kunit.py hard-codes "-accel kvm -accel hvf -accel tcg"; KVM is broken on
# these hosts, so build/bin/qemu-system-x86_64 (support/qemu) drops the
# first two and QEMU runs under TCG.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/support/versions.sh"
export BINDGEN LIBCLANG_PATH RUST_LIB_SRC

"$top/support/kernel.sh" tree
mkdir -p "$top/build/bin"
ln -sf "$top/support/qemu" "$top/build/bin/qemu-system-x86_64"
cd "$top/build/src"
PATH=$top/build/bin:$PATH exec python3 tools/testing/kunit/kunit.py run \
	--arch=x86_64 \
	--kunitconfig=drivers/virtio/.kunitconfig \
	--build_dir="$top/build/kunit" \
	--jobs="${JOBS:-$(nproc)}" \
	--timeout="${KUNIT_TIMEOUT:-600}" \
	--make_options "BINDGEN=$BINDGEN" \
	"$@"
