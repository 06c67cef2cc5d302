#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# make check: run every test suite, print one summary line per suite and
# end with the line CI reads:  check: N passed, N failed
#
# Suites: lint (rustfmt, rustc and clippy warnings), kunit (kunit.py), cargo (cargo test of tools/virtio-msg), fuzz
# (the wire codec fuzz target, FUZZ_RUNS inputs), series (make series-check:
# the patch series applies, builds after every patch, is checkpatch-clean), e2e (QEMU guests), e2e-kasan
# (the fault tests in the KASAN guest, whose kernel it builds first).
# A suite that cannot even run (a build error, say) counts as one failure.
# Full logs: build/check/SUITE.log.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
logs=$top/build/check
mkdir -p "$logs"
suites=${SUITES:-lint cargo fuzz series kunit e2e e2e-kasan}

total_pass=0 total_fail=0
summary=()

# record SUITE PASSED FAILED SECONDS
record() {
	summary+=("check: $1: $2 passed, $3 failed ($4 s)")
	total_pass=$((total_pass + $2))
	total_fail=$((total_fail + $3))
}

# run SUITE COMMAND...: run with output to the terminal and to the log
run() {
	local suite=$1
	shift
	echo "=== check: $suite ==="
	"$@" 2>&1 | tee "$logs/$suite.log"
	return "${PIPESTATUS[0]}"
}

# Everything the suites need: provisioning, the kernel, our modules, the
# initramfs. If this fails, nothing else can pass.
start=$(date +%s)
if run build make -C "$top" --no-print-directory all; then
	record build 1 0 $(($(date +%s) - start))
else
	record build 0 1 $(($(date +%s) - start))
	suites=
fi

for suite in $suites; do
	start=$(date +%s)
	case $suite in
	kunit)
		run kunit make -C "$top" --no-print-directory kunit
		rc=$?
		line=$(sed 's/\x1b\[[0-9;]*m//g' "$logs/kunit.log" | grep -E 'Ran [0-9]+ tests?' | tail -1)
		p=$(sed -nE 's/.*passed: ([0-9]+).*/\1/p' <<<"$line")
		f=$(sed -nE 's/.*failed: ([0-9]+).*/\1/p' <<<"$line")
		p=${p:-0} f=${f:-0}
		[ $rc = 0 ] || [ "$f" -gt 0 ] || f=1
		[ -n "$line" ] || { p=0; f=1; }
		;;
	cargo)
		run cargo make -C "$top" --no-print-directory cargo-test
		rc=$?
		p=$(sed -nE 's/^test result: .* ([0-9]+) passed.*/\1/p' "$logs/cargo.log" | paste -sd+ | bc)
		f=$(sed -nE 's/^test result: .* ([0-9]+) failed.*/\1/p' "$logs/cargo.log" | paste -sd+ | bc)
		p=${p:-0} f=${f:-0}
		[ $rc = 0 ] || [ "$f" -gt 0 ] || f=1
		;;
	lint)
		run lint make -C "$top" --no-print-directory lint
		rc=$?
		p=$(grep -c '^lint: .* pass$' "$logs/lint.log")
		f=$(grep -c '^lint: .* fail$' "$logs/lint.log")
		[ $rc = 0 ] || [ "$f" -gt 0 ] || f=1
		;;
	series)
		run series make -C "$top" --no-print-directory series-check
		rc=$?
		p=$(grep -c '^series: [a-z0-9_]* pass$' "$logs/series.log")
		f=$(grep -c '^series: [a-z0-9_]* fail' "$logs/series.log")
		[ $rc = 0 ] || [ "$f" -gt 0 ] || f=1
		;;
	fuzz)
		if run fuzz make -C "$top" --no-print-directory fuzz; then p=1 f=0; else p=0 f=1; fi
		;;
	e2e | e2e-kasan)
		run "$suite" make -C "$top" --no-print-directory "$suite"
		rc=$?
		line=$(grep -E '^e2e: [0-9]+ passed, [0-9]+ failed' "$logs/$suite.log" | tail -1)
		p=$(sed -nE 's/^e2e: ([0-9]+) passed.*/\1/p' <<<"$line")
		f=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$line")
		p=${p:-0} f=${f:-0}
		[ $rc = 0 ] || [ "$f" -gt 0 ] || f=1
		;;
	*)
		echo "check: unknown suite $suite" >&2
		p=0 f=1
		;;
	esac
	record "$suite" "$p" "$f" $(($(date +%s) - start))
done

# The failures again, just above the summary: CI may keep only the tail.
echo
for suite in build $suites; do
	case $suite in
	e2e | e2e-kasan) pattern='^e2e: (FAILED: |--- |  )' ;;
	series) pattern='^series: [a-z0-9_]+ fail|^series: error|^series:   ' ;;
	kunit) pattern='not ok [0-9]+ [a-z]|# .*(FAIL|failed)|Expected ' ;;
	cargo) pattern='^test .* FAILED$|panicked at|^error' ;;
	*) pattern='^(error|warning)|FAIL' ;;
	esac
	grep -E "$pattern" "$logs/$suite.log" 2>/dev/null | head -n 80 | sed "s/^/check: $suite: /"
done
echo
printf '%s\n' "${summary[@]}"
echo "check: $total_pass passed, $total_fail failed"
[ $total_fail = 0 ]
