#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
#   kunit.sh [ARGS...]  the KUnit suites of drivers/virtio/.kunitconfig with
#                       the kernel's own runner (make kunit): kunit.py run
#                       --arch=x86_64 in build/kunit, its own kernel; ARGS
#                       go to kunit.py
#   kunit.sh guest      the same suites in the guest kernel that "make"
#                       built (make check): no kernel build of its own. The
#                       guest config builds them (as modules where they
#                       belong to one) with kunit.enable off by default;
#                       this boots it with kunit.enable=1, guest/kunit.sh
#                       loads the modules and writes every suite's results
#                       as one KTAP document, and kunit.py parse reads it
#                       (same summary as kunit.py run). Log: build/kunit-guest/.
#
# kunit.py hard-codes "-accel kvm -accel hvf -accel tcg"; KVM is broken on
# these hosts, so build/bin/qemu-system-x86_64 (support/qemu) drops the
# first two and QEMU runs under TCG.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/support/versions.sh"
export BINDGEN LIBCLANG_PATH RUST_LIB_SRC

if [ "${1:-}" = guest ]; then
	dir=$top/build/kunit-guest
	mkdir -p "$dir"
	rc=0
	# rng_core.default_quality=0: no hwrng thread reads from the suites' entropy
	# devices, whose fake device side never answers a second request. Stock
	# virtio-rng can hang its removal when one does: a reader woken by the
	# device's last buffer asks for more (reinit_completion()) right after
	# remove_common()'s complete(), then waits for good, and
	# hwrng_unregister() for the reader (seen once in a cold make check).
	"$top/tools/testing/virtio-msg/boot.sh" --test kunit --log "$dir/console.log" \
		--timeout "${KUNIT_TIMEOUT:-600}" --append "kunit.enable=1 rng_core.default_quality=0" || rc=$?
	[ $rc = 0 ] || echo "kunit: the guest exited with status $rc (log $dir/console.log)"
	# The document, without what /init writes around it.
	tr -d '\r' <"$dir/console.log.results" | sed -n '/^KTAP version 1$/,$p' |
		grep -v '^e2e: done$' >"$dir/results.ktap"
	exec python3 "$top/build/src/tools/testing/kunit/kunit.py" parse "$dir/results.ktap"
fi

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
