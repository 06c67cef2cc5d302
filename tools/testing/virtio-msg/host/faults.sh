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
#                                 the echoes of its PINGs back
set -uo pipefail

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
	fi
	;;
*) echo "faults.sh: unknown command $cmd" >&2; exit 2 ;;
esac
