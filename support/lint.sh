#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# make lint: no warnings from rustfmt, rustc or clippy, in the kernel code
# (built with the kernel's CLIPPY=1) and in the userspace tools, and the
# compiler refuses what the types must refuse (compile-fail.sh).
# Prints "lint: STEP pass|fail" per step and "lint: N passed, N failed".
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
passed=0 failed=0
step() {
	local name=$1
	shift
	echo "--- lint: $name"
	if "$@"; then
		echo "lint: $name pass"
		passed=$((passed + 1))
	else
		echo "lint: $name fail"
		failed=$((failed + 1))
	fi
}

kernel_rs=$(find drivers rust -name '*.rs' 2>/dev/null | LC_ALL=C sort)

# The kernel's own rustfmt settings (a copy lives in tools/virtio-msg).
step rustfmt-kernel rustfmt --check --edition 2021 --config-path tools/virtio-msg/rustfmt.toml $kernel_rs
step rustfmt-tools sh -c 'cd tools/virtio-msg && cargo fmt --all --check && cd wire/fuzz && cargo fmt --check'
step clippy-tools sh -c 'cd tools/virtio-msg && cargo clippy --release --all-targets -- -D warnings'

# Rebuild our crates (only those) with CLIPPY=1 and fail on any warning.
kernel_clippy() {
	local log
	support/kernel.sh build >/dev/null || return 1
	# Touch every crate root that includes a file of ours: the files with an
	# object of their own, and the kernel crate for rust/kernel/.
	for f in $kernel_rs; do
		if [ -f "build/obj/${f%.rs}.o" ]; then touch "build/src/$f"; fi
		case $f in rust/kernel/*) touch build/src/rust/kernel/lib.rs ;; esac
	done
	log=$(support/kernel.sh make CLIPPY=1 modules 2>&1)
	echo "$log"
	! grep -qE '^(warning|error)' <<<"$log"
}
step clippy-kernel kernel_clippy

# What the types must refuse (kernel doctests cannot be compile_fail).
step compile-fail tools/testing/virtio-msg/compile-fail.sh

echo "lint: $passed passed, $failed failed"
[ $failed = 0 ]
