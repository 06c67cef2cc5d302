#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# compile-fail.sh: each compile-fail/NAME.rs, built as an external module
# against build/obj, must compile as it is and must be refused by the borrow
# checker when built with --cfg keep_for_later, at its line marked "ESCAPES"
# (a lifetime error: E0521, E0597 or "lifetime may not live long enough").
# Kernel doctests cannot be compile_fail (the kernel's rustdoc test builder
# turns every doctest into a KUnit case), hence this.
set -uo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
here=$top/tools/testing/virtio-msg/compile-fail
status=0
for src in "$here"/*.rs; do
	name=$(basename "$src" .rs)
	line=$(grep -n '// ESCAPES' "$src" | cut -d: -f1)
	[ -n "$line" ] || { echo "compile-fail: $name: no line marked ESCAPES"; status=1; continue; }
	for variant in plain keep_for_later; do
		dir=$top/build/compile-fail/$name-$variant
		rm -rf "$dir" && mkdir -p "$dir"
		cp "$src" "$dir/"
		echo "obj-m := $name.o" >"$dir/Kbuild"
		[ $variant = plain ] || echo "rustflags-y += --cfg $variant" >>"$dir/Kbuild"
		log=$("$top/support/kernel.sh" make M="$dir" modules 2>&1)
		rc=$?
		if [ $variant = plain ]; then
			if [ $rc = 0 ]; then
				echo "compile-fail: $name: builds as it is"
			else
				echo "$log"
				echo "compile-fail: $name: does not build as it is"
				status=1
				break
			fi
		elif [ $rc != 0 ] && grep -qE 'error(\[E0521\]|\[E0597\]|: lifetime may not live long enough)' <<<"$log" &&
			grep -qE -- "--> .*$name\.rs:$line:" <<<"$log"; then
			echo "compile-fail: $name: refused at line $line, as it must be"
		else
			echo "$log"
			echo "compile-fail: $name: not refused at line $line with a lifetime error"
			status=1
		fi
	done
done
exit $status
