#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# make check: run every test suite, print one summary line per suite (with
# the time it took) and end with the line CI reads:
#   check: N passed, N failed
#
# Suites: lint (rustfmt, rustc and clippy warnings), kunit (the KUnit suites,
# in the guest kernel: support/kunit.sh guest), cargo (cargo test of
# tools/virtio-msg), fuzz (the wire codec fuzz target, FUZZ_RUNS inputs),
# series (make series-check: the patch series applies, builds after every
# patch, is checkpatch-clean), e2e (QEMU guests), e2e-kasan (the tests marked
# "e2e-kasan" in the KASAN guest, whose kernel is built first). SUITES="..." picks some.
# A suite that cannot even run (a build error, say) counts as one failure.
#
# First "make" (provisioning, the guest kernel, the initramfs, the emulator);
# then three lanes run side by side, because a TCG guest keeps about one of
# the two host cores busy and a build the other:
#   guests: kunit, e2e, e2e-kasan (E2E_JOBS guests at a time, see e2e.sh),
#           then cargo and fuzz, which fill the cores the build lane's
#           single-threaded steps leave at the end;
#   builds: the KASAN kernel (e2e-kasan waits for it), then lint; beside
#           it, the series (a third lane: its per-patch builds are mostly
#           one rustc at a time); both at the lowest CPU priority (nice 19),
#           so that they take what the guests leave and the guests' timing
#           is what it is on an idle machine.
# Each suite's output is printed when the suite ends.
# Full logs: build/check/SUITE.log.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
logs=$top/build/check
here=$top/tools/testing/virtio-msg
mkdir -p "$logs"
rm -f "$logs"/*.result "$logs"/kasan-kernel.*
suites=" ${SUITES:-lint cargo fuzz series kunit e2e e2e-kasan} "
check_start=$(date +%s)

# record SUITE PASSED FAILED SECONDS: the suite's verdict, for the summary
record() { echo "$2 $3 $4" >"$logs/$1.result"; }

# show SUITE: its log, whole, when it ends (one lane at a time)
show() {
	{
		flock 9
		echo "=== check: $1 ==="
		cat "$logs/$1.log"
	} 9>"$logs/.print.lock"
}

# count_e2e LOG RC: "P F" from e2e.sh's last line
count_e2e() {
	local line p f
	line=$(grep -E '^e2e: [0-9]+ passed, [0-9]+ failed' "$1" | tail -1)
	p=$(sed -nE 's/^e2e: ([0-9]+) passed.*/\1/p' <<<"$line")
	f=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$line")
	p=${p:-0} f=${f:-0}
	[ "$2" = 0 ] || [ "$f" -gt 0 ] || f=1
	echo "$p $f"
}

# suite NAME: run it, log it, record it
suite() {
	local name=$1 start rc p f line log=$logs/$1.log
	start=$(date +%s)
	case $name in
	kunit)
		"$top/support/kunit.sh" guest >"$log" 2>&1
		rc=$?
		line=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E 'Ran [0-9]+ tests?' | tail -1)
		p=$(sed -nE 's/.*passed: ([0-9]+).*/\1/p' <<<"$line")
		f=$(sed -nE 's/.*failed: ([0-9]+).*/\1/p' <<<"$line")
		p=${p:-0} f=${f:-0}
		[ $rc = 0 ] || [ "$f" -gt 0 ] || f=1
		[ -n "$line" ] || { p=0; f=1; }
		;;
	e2e)
		"$here/e2e.sh" >"$log" 2>&1
		rc=$?
		read -r p f < <(count_e2e "$log" $rc)
		;;
	e2e-kasan)
		# The KASAN kernel comes from the build lane.
		while [ ! -f "$logs/kasan-kernel.rc" ]; do sleep 5; done
		start=$(date +%s)
		if [ "$(cat "$logs/kasan-kernel.rc")" = 0 ]; then
			# The tests marked "# e2e-kasan: WHY": each frees, sizes or
			# copies something from what the device side does (a device
			# removed with I/O in flight, a lying size or index, a late
			# answer). The plain guest runs every test, with lockdep and
			# kmemleak, which the KASAN kernel leaves out.
			VMSG_VARIANT=kasan "$here/e2e.sh" $(cd "$here/guest" &&
				grep -l '^# e2e-kasan: ' *.sh | sed 's/\.sh$//') >"$log" 2>&1
			rc=$?
			read -r p f < <(count_e2e "$log" $rc)
		else
			{ echo "check: the KASAN kernel did not build:"; tail -n 40 "$logs/kasan-kernel.log"; } >"$log"
			p=0 f=1
		fi
		;;
	kasan-kernel)
		# Not a suite: the kernel e2e-kasan needs (its time is shown apart).
		make -C "$top" --no-print-directory kasan >"$logs/kasan-kernel.log" 2>&1
		echo $? >"$logs/kasan-kernel.rc"
		echo "$(($(date +%s) - start))" >"$logs/kasan-kernel.seconds"
		return
		;;
	cargo)
		make -C "$top" --no-print-directory cargo-test >"$log" 2>&1
		rc=$?
		p=$(sed -nE 's/^test result: .* ([0-9]+) passed.*/\1/p' "$log" | paste -sd+ | bc)
		f=$(sed -nE 's/^test result: .* ([0-9]+) failed.*/\1/p' "$log" | paste -sd+ | bc)
		p=${p:-0} f=${f:-0}
		[ $rc = 0 ] || [ "$f" -gt 0 ] || f=1
		;;
	lint)
		make -C "$top" --no-print-directory lint >"$log" 2>&1
		rc=$?
		p=$(grep -c '^lint: .* pass$' "$log")
		f=$(grep -c '^lint: .* fail$' "$log")
		[ $rc = 0 ] || [ "$f" -gt 0 ] || f=1
		;;
	series)
		make -C "$top" --no-print-directory series-check >"$log" 2>&1
		rc=$?
		p=$(grep -c '^series: [a-z0-9_]* pass$' "$log")
		f=$(grep -c '^series: [a-z0-9_]* fail' "$log")
		[ $rc = 0 ] || [ "$f" -gt 0 ] || f=1
		;;
	fuzz)
		if make -C "$top" --no-print-directory fuzz >"$log" 2>&1; then p=1 f=0; else p=0 f=1; fi
		;;
	*)
		echo "check: unknown suite $name" >"$log"
		p=0 f=1
		;;
	esac
	record "$name" "$p" "$f" $(($(date +%s) - start))
	show "$name"
}

# lane SUITE...: those of SUITES, one after the other
lane() {
	local s
	for s in "$@"; do
		case $suites in *" $s "*) suite "$s" ;; esac
	done
}

# Everything the suites need: provisioning, the kernel, our modules, the
# initramfs, the emulator. If this fails, nothing else can pass.
echo "=== check: build ==="
start=$(date +%s)
make -C "$top" --no-print-directory all 2>&1 | tee "$logs/build.log"
if [ "${PIPESTATUS[0]}" = 0 ]; then
	record build 1 0 $(($(date +%s) - start))
	case $suites in *" e2e-kasan "*) want_kasan=kasan-kernel ;; *) want_kasan= ;; esac
	lane kunit e2e e2e-kasan cargo fuzz &
	guests=$!
	# The KASAN kernel first: e2e-kasan waits for it; lint after it (it
	# touches files of build/src to rebuild our crates with clippy).
	(
		renice -n 19 -p $BASHPID >/dev/null
		[ -z "$want_kasan" ] || suite kasan-kernel
		lane lint
	) &
	builds=$!
	# The series beside it: its per-patch builds are mostly one rustc at a
	# time, so after them one core would otherwise idle.
	(
		renice -n 19 -p $BASHPID >/dev/null
		lane series
	) &
	series=$!
	wait $guests $builds $series
else
	record build 0 1 $(($(date +%s) - start))
	suites=" "
fi

total_pass=0 total_fail=0
summary=()
for s in build lint cargo fuzz series kunit e2e e2e-kasan; do
	[ -f "$logs/$s.result" ] || continue
	read -r p f secs <"$logs/$s.result"
	extra=
	if [ "$s" = e2e-kasan ] && [ -f "$logs/kasan-kernel.seconds" ]; then
		extra=", after its kernel: $(cat "$logs/kasan-kernel.seconds") s"
	fi
	summary+=("check: $s: $p passed, $f failed ($secs s$extra)")
	total_pass=$((total_pass + p))
	total_fail=$((total_fail + f))
done

# failures SUITE KIND: the lines of SUITE's log about its failures, prefixed
# with the suite; KIND "detail" is what went wrong, "line" one line per
# failed check
failures() {
	local detail line
	case $1 in
	e2e | e2e-kasan) detail='^e2e: (FAILED: |--- |  )|^check: ' line='^e2e: FAILED: ' ;;
	series) detail='^series: [a-z0-9_]+ fail|^series: error|^series:   ' line='^series: [a-z0-9_]+ fail' ;;
	kunit) detail='not ok [0-9]+ [a-z]|# .*(FAIL|failed)|Expected |^kunit: ' line='not ok [0-9]+ [a-z]' ;;
	cargo) detail='^test .* FAILED$|panicked at|^error' line='^test .* FAILED$' ;;
	*) detail='^(error|warning)|FAIL' line='^error|FAIL' ;;
	esac
	[ "$2" = detail ] && line=$detail
	grep -E "$line" "$logs/$1.log" 2>/dev/null | sed "s/^/check: $1: /"
}

# The failures again, just above the summary: CI may keep only the tail.
echo
for s in build $suites; do
	failures "$s" detail | head -n 80
done
# Last, one line per failed check, at most a dozen, right above the summary:
# CI may keep only the last two dozen lines of all the above.
echo
for s in build $suites; do
	failures "$s" line
done | head -n 12
echo
printf '%s\n' "${summary[@]}"
echo "check: wall time $(($(date +%s) - check_start)) s"
echo "check: $total_pass passed, $total_fail failed"
[ $total_fail = 0 ]
