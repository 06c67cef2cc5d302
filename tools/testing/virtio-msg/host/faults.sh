#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Host side of the fault tests (guest/fault_*.sh, see e2e.sh):
#
#   faults.sh setup DIR           create the disk image, print the emulator's
#                                 arguments: one FIFO with a block device
#                                 (device number 0) and two entropy devices
#                                 (1 and 2); each test adds its --fault
#   faults.sh verify DIR RESULTS  for fault_ping and fault_ping_burst (their
#                                 guests report "pings_answered" or
#                                 "pings_burst_answered"): the emulator got
#                                 the echoes of its PINGs back; for the
#                                 burst also, that the driver rang one
#                                 doorbell per batch of echoes, not one
#                                 per echo (see burst_doorbells)
set -uo pipefail

# burst_doorbells LOG: the driver answered the PING burst with one doorbell
# per batch of echoes, not one per echo. The emulator's LOG says "PING burst
# of N: E echoed with D doorbells", D counted from the moment the burst went
# on the device queue to the moment its last echo came: a driver that rings
# for every PONG rings about E times (E - 1 at the least), one that rings per
# drained batch a handful. D at most E/4 passes, which leaves room for the
# doorbells of other traffic in that window; no echo at all fails.
burst_doorbells() {
	local line echoed doorbells
	line=$(grep -o 'PING burst of [0-9]*: [0-9]* echoed with [0-9]* doorbells' "$1" 2>/dev/null | tail -n 1)
	echoed=$(sed -n 's/.*: \([0-9]*\) echoed.*/\1/p' <<<"$line")
	doorbells=$(sed -n 's/.* with \([0-9]*\) doorbells$/\1/p' <<<"$line")
	echo "faults.sh: emulator: ${line:-no PING burst figures}" >&2
	if [ -z "$echoed" ] || [ -z "$doorbells" ]; then
		echo "e2e-result: host_burst_one_doorbell_per_batch fail (no PING burst figures in the emulator log)"
	elif [ "$echoed" -gt 0 ] && [ $((doorbells * 4)) -le "$echoed" ]; then
		echo "e2e-result: host_burst_one_doorbell_per_batch pass"
	else
		echo "e2e-result: host_burst_one_doorbell_per_batch fail ($doorbells doorbells for $echoed echoes of the burst, at most $echoed/4 wanted; $line)"
	fi
}

cmd=$1 dir=$2
case $cmd in
setup)
	rm -f "$dir/disk.img"
	truncate -s 4M "$dir/disk.img"
	echo "--fifos 1 --device 0:0:blk,file=$dir/disk.img --device 0:1:rng --device 0:2:rng"
	;;
verify)
	results=$3
	line=$(grep -o 'device PINGs sent [0-9]*, echoed [0-9]*' "${results%.results}.emulator" 2>/dev/null | tail -n 1)
	sent=$(sed -n 's/.*sent \([0-9]*\),.*/\1/p' <<<"$line")
	echoed=$(sed -n 's/.*echoed \([0-9]*\)$/\1/p' <<<"$line")
	answered=$(tr -d '\r' <"$results" | sed -n 's/^e2e-data: pings_answered //p')
	if [ -n "$answered" ]; then
		echo "faults.sh: emulator: $line; driver: $answered answered" >&2
		if [ -n "$sent" ] && [ "$sent" = 20 ] && [ "$echoed" = 20 ]; then
			echo "e2e-result: host_pings_echoed pass"
		else
			echo "e2e-result: host_pings_echoed fail (${line:-no PING count in the emulator log})"
		fi
	fi
	# fault_ping_burst: every PING that reached the driver was echoed.
	answered=$(tr -d '\r' <"$results" | sed -n 's/^e2e-data: pings_burst_answered //p')
	if [ -n "$answered" ]; then
		echo "faults.sh: emulator: $line; driver: $answered answered" >&2
		if [ -n "$sent" ] && [ "$sent" -gt 0 ] && [ "$echoed" = "$sent" ] && [ "$answered" = "$sent" ]; then
			echo "e2e-result: host_burst_pings_echoed pass"
		else
			echo "e2e-result: host_burst_pings_echoed fail (${line:-no PING count in the emulator log}; driver answered $answered)"
		fi
		burst_doorbells "${results%.results}.emulator"
	fi
	;;
*) echo "faults.sh: unknown command $cmd" >&2; exit 2 ;;
esac
