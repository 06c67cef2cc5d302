#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# e2e.sh [TEST...]: boot one guest per test (default: every guest/*.sh
# except lib.sh, demo.sh, bench.sh and kunit.sh), collect the guest's "e2e-result:" lines (from
# its second serial port, see boot.sh), and
# add one check of our own per boot: the guest finished, and the kernel log
# holds no oops, BUG, WARNING, lockdep splat, hung task or lockup report. Logs: build/e2e/TEST.log.
#
# Prints "e2e: TEST CHECK pass|fail" per check, one line per virtio device
# type ("e2e: virtio-blk: pass (N checks)"), and ends with
# "e2e: N passed, N failed"; exits non-zero on any failure.
#
# A guest script with a line "# e2e-emulator: ARGS" is booted with the AMP
# PCI device served by virtio-msg-emulator: boot.sh --emulator "ARGS".
# A test with a host side, host/TEST.sh, gets its emulator arguments from
# "host/TEST.sh setup DIR" (which also starts what the devices talk to on
# this host), and "host/TEST.sh verify DIR RESULTS" adds its own
# "e2e-result:" lines after the guest ran (DIR: build/e2e/TEST.host).
# A guest script can run another test's body with the emulator changed:
# "# e2e-host: OTHER" uses host/OTHER.sh as its host side, and
# "# e2e-emulator-extra: ARGS" appends ARGS to the emulator's arguments
# (amp_pci_tokens_zero: the amp_pci suite with --tokens zero), and
# "# e2e-timeout: SECONDS" gives a longer run more than E2E_TIMEOUT,
# "# e2e-append: ARGS" adds ARGS to the guest kernel's command line,
# "# e2e-append-VARIANT: ARGS" adds ARGS in the VMSG_VARIANT guest only
# (fault_reboot restarts a FIFO fewer times in the KASAN guest),
# "# e2e-kasan: WHY" puts the test in the KASAN run of make check (what it
# does that a memory error could hide in; support/check.sh), and
# "# e2e-exclusive: NAME" keeps the test from running beside any other test
# (of this run or of another e2e.sh, the KASAN one say) that names NAME (a TAP
# interface or a host port they share).
#
# Guests run E2E_JOBS at a time (default 2; a TCG guest keeps about one host
# core busy), longest timeout first; each test's lines are printed when it
# ends.
set -uo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
here=$top/tools/testing/virtio-msg
timeout=${E2E_TIMEOUT:-240}
# A guest whose init has said nothing this long after it started hung while
# booting (E2E_BOOT_LIMIT; twice as long in the KASAN guest).
boot_limit=${E2E_BOOT_LIMIT:-120}
[ -z "${VMSG_VARIANT:-}" ] || boot_limit=$((boot_limit * 2))
# VMSG_VARIANT=kasan: the KASAN guest (boot.sh), logs in build/e2e-kasan/;
# it runs slower, so each guest gets twice as long.
logs=$top/build/e2e${VMSG_VARIANT:+-$VMSG_VARIANT}

if [ $# -eq 0 ]; then
	set -- $(cd "$here/guest" && ls *.sh | grep -vxE 'lib\.sh|demo\.sh|bench\.sh|kunit\.sh' | sed 's/\.sh$//')
fi

# What a clean guest kernel log never shows.
kernel_problems='BUG:|WARNING:|Oops|Call Trace:|[Kk]ernel panic|possible recursive locking|circular locking|kmemleak: [0-9]+ new suspected|deprecated|blocked for more than|soft lockup|hard LOCKUP|workqueue lockup'

jobs=${E2E_JOBS:-2}
locks=$top/build/e2e-locks
mkdir -p "$logs" "$locks"

passed=0 failed=0
all=() failures=()
# count TEST CHECK VERDICT [REASON]: a check's verdict, in the totals
count() {
	all+=("$2 $3")
	if [ "$3" = pass ]; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("$1 $2${4:+ $4}")
	fi
}

# result TEST CHECK VERDICT [REASON] (in a test's job): printed, and kept in
# build/e2e/TEST.checks for the totals
result() {
	echo "e2e: $1 $2 $3${4:+ $4}"
	echo "$2 $3${4:+ $4}" >>"$logs/$1.checks"
}

# early_crash <LOG: the kernel's report of its first crash in LOG (from the
# oops line: the faulting instruction, registers and call trace), or the last
# lines before a boot that hung
early_crash() {
	local text
	text=$(tr -d '\r')
	if grep -q 'the kernel hung while booting' <<<"$text"; then
		tail -n 10 <<<"$text"
	else
		sed -nE '/Oops|[Kk]ernel panic|BUG:/,$p' <<<"$text" | head -n 40
	fi | sed 's/^/e2e:   | /'
}

# What went wrong, repeated at the end where a truncated CI log still shows
# it: each failed check, then the guest's own account of the failing tests
# (its verdicts and whatever the kernel said about virtio-msg or a problem).
report_failures() {
	local f t seen=" "
	for f in "${failures[@]}"; do
		echo "e2e: FAILED: $f"
	done
	for f in "${failures[@]}"; do
		t=${f%% *}
		case $seen in *" $t "*) continue ;; esac
		seen="$seen$t "
		echo "e2e: --- $t: last kernel lines about the failure ($logs/$t.log) ---"
		{ tr -d '\r' <"$logs/$t.log"; } 2>/dev/null |
			grep -E "virtio_msg|virtio-msg|e2e-result: .* fail|$kernel_problems" |
			tail -n 25 | sed 's/^/e2e:   /'
		early_crash <"$logs/$t.log"
	done
}

# One line per virtio device type, from the checks named after it (rng_*,
# blk_*, net_*, console_*, and their host_* counterparts); not counted again.
by_device() {
	local dev n bad
	for dev in rng blk net console; do
		n=0 bad=0
		for r in "${all[@]}"; do
			case ${r%% *} in
			"${dev}"_* | host_"${dev}"_*) n=$((n + 1)); [ "${r#* }" = pass ] || bad=$((bad + 1)) ;;
			esac
		done
		[ $n -gt 0 ] || continue
		if [ $bad = 0 ]; then
			echo "e2e: virtio-$dev: pass ($n checks)"
		else
			echo "e2e: virtio-$dev: fail ($bad of $n checks failed)"
		fi
	done
}

# directive TEST NAME: the value of the line "# e2e-NAME: VALUE" of guest/TEST.sh
directive() {
	sed -n "s/^# e2e-$2: //p" "$here/guest/$1.sh" 2>/dev/null | head -n 1
}

# run_one TEST: boot the guest of TEST and check what it did (a job)
run_one() {
	local t=$1 log=$logs/$1.log start emulator host_of host hostdir extra t_timeout rc n attempt
	local tokens bad name verdict reason append
	rm -f "$logs/$t.checks"
	start=$(date +%s)
	emulator=$(directive "$t" emulator)
	host_of=$(directive "$t" host)
	host=$here/host/${host_of:-$t}.sh hostdir=$logs/$t.host
	if [ -x "$host" ]; then
		mkdir -p "$hostdir"
		emulator=$("$host" setup "$hostdir")
	fi
	extra=$(directive "$t" emulator-extra)
	emulator="$emulator${extra:+ $extra}"
	rm -f "$log.emulator"
	t_timeout=$(directive "$t" timeout)
	t_timeout=${t_timeout:-$timeout}
	[ -z "${VMSG_VARIANT:-}" ] || t_timeout=$((t_timeout * 2))
	append=$(directive "$t" append)
	[ -z "${VMSG_VARIANT:-}" ] || append="$append $(directive "$t" "append-$VMSG_VARIANT")"
	for attempt in 1 2; do
		"$here/boot.sh" --test "$t" --log "$log" --timeout "$t_timeout" \
			--boot-limit "$boot_limit" ${append:+--append "$append"} \
			${emulator:+--emulator "$emulator"}
		rc=$?
		# A kernel that crashes or hangs while booting, before the guest's
		# init has said anything (so before any module of ours is loaded),
		# is TCG's or the kernel's own early boot, not the test: a rare
		# event under KASAN (a fault in the IO-APIC timer check, a hang as
		# the clocksource switches). Said, its log kept, and booted once more.
		[ $attempt = 1 ] && ! grep -qa '^e2e-result: ' "$log.results" 2>/dev/null &&
			grep -qaE 'Oops|[Kk]ernel panic|BUG:|the kernel hung while booting' "$log" 2>/dev/null ||
			break
		mv -f "$log" "$log.boot-crash"
		echo "e2e: $t: the kernel crashed or hung while booting, before the test began (log $log.boot-crash):"
		early_crash <"$log.boot-crash"
		echo "e2e: $t: booting it once more"
	done
	if [ -x "$host" ]; then
		"$host" verify "$hostdir" "$log.results" >>"$log.results"
	fi
	echo "e2e: $t: guest ran $(($(date +%s) - start)) s (log $log)"
	if [ $rc = 124 ] || [ $rc = 137 ]; then
		result "$t" boot fail "(guest killed after ${t_timeout}s)"
	fi
	n=0
	while read -r name verdict reason; do
		result "$t" "$name" "$verdict" "$reason"
		n=$((n + 1))
	done < <(tr -d '\r' <"$log.results" 2>/dev/null | sed -n 's/^e2e-result: //p')
	[ $n -gt 0 ] || result "$t" results fail "(the guest reported nothing)"
	if [ -f "$log.emulator" ]; then
		# The device side must not have seen anything wrong either; with
		# --fault, nothing it did not cause itself.
		case " $emulator " in
		*" --fault "*) bad=' ERROR ' ;;
		*) bad=' (ERROR|WARN) ' ;;
		esac
		if grep -nE "$bad" "$log.emulator"; then
			result "$t" emulator_log_clean fail
		else
			result "$t" emulator_log_clean pass
		fi
		# A token mode asked for is the one the emulator ran with.
		tokens=$(sed -nE 's/.*--tokens[ =]([a-z]+).*/\1/p' <<<"$extra")
		if [ -n "$tokens" ]; then
			if grep -qi "tokens $tokens)" "$log.emulator"; then
				result "$t" emulator_tokens_$tokens pass
			else
				result "$t" emulator_tokens_$tokens fail
			fi
		fi
	fi
	if ! tr -d '\r' <"$log.results" 2>/dev/null | grep -qx 'e2e: done'; then
		result "$t" finished fail "(the guest did not finish its test)"
	elif grep -nE "$kernel_problems" "$log"; then
		result "$t" kernel_log_clean fail
	else
		result "$t" kernel_log_clean pass
	fi
}

# job TEST: run_one, holding the lock its e2e-exclusive directive names
# (fd 9, which the guest, the emulator and the host helpers do not inherit:
# bash keeps its copy close-on-exec while run_one runs with 9 closed)
job() {
	local exclusive
	exclusive=$(directive "$1" exclusive)
	if [ -n "$exclusive" ]; then
		exec 9>"$locks/$exclusive"
		flock 9
	fi
	run_one "$1" 9>&-
}

# The tests, longest timeout first (the soak), so that it does not end alone.
mapfile -t order < <(for t in "$@"; do echo "$(directive "$t" timeout) $t"; done |
	sort -s -k1,1nr | cut -d' ' -f2)

# collect TEST: its job ended: its output, and its checks in the totals
collect() {
	local name verdict reason
	cat "$logs/$1.out"
	while read -r name verdict reason; do
		count "$1" "$name" "$verdict" "$reason"
	done <"$logs/$1.checks"
}

declare -A running=()
finish_one() {
	local pid
	wait -n -p pid "${!running[@]}"
	collect "${running[$pid]}"
	unset "running[$pid]"
}
for t in "${order[@]}"; do
	while [ ${#running[@]} -ge "$jobs" ]; do finish_one; done
	job "$t" >"$logs/$t.out" 2>&1 &
	running[$!]=$t
done
while [ ${#running[@]} -gt 0 ]; do finish_one; done

by_device
report_failures
echo "e2e: $passed passed, $failed failed"
[ $failed = 0 ]
