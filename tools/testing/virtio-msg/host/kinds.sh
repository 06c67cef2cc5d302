#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Host side of the fault tests on network and console devices
# (guest/fault_net_*.sh, guest/fault_console_*.sh; see e2e.sh):
#
#   kinds.sh setup DIR           print the emulator's arguments and start the
#                                peers (peers.py): FIFO 0 has a network device
#                                (device number 0, TAP vmsgtap0, 10.77.0.1/24,
#                                an echo server on port 5578 and a digest
#                                server on 5579) and a console (1, whose output
#                                goes to DIR/console.out); FIFO 1, the healthy
#                                one, a disk (0) and an entropy device (1)
#   kinds.sh verify DIR RESULTS  the console lines the guest reported
#                                ("e2e-data: console_line LINE") arrived;
#                                stops the peers
#
# Needs root (the emulator creates the TAP interface).
set -uo pipefail

cmd=$1 dir=$2
here=$(dirname "$0")

case $cmd in
setup)
	[ -f "$dir/pids" ] && kill $(cat "$dir/pids") 2>/dev/null
	rm -f "$dir"/disk.img "$dir"/console.* "$dir"/pids
	truncate -s 8M "$dir/disk.img"
	for peer in "console $dir/console.sock $dir/console.out" "echo 5578" "digest 5579"; do
		# shellcheck disable=SC2086 # the peer's arguments
		python3 "$here/peers.py" $peer >>"$dir/peers.log" 2>&1 &
		echo $! >>"$dir/pids"
	done
	echo "--fifos 2 --device 0:0:net,tap=vmsgtap0,host-ip=10.77.0.1/24" \
		"--device 0:1:console,socket=$dir/console.sock" \
		"--device 1:0:blk,file=$dir/disk.img --device 1:1:rng"
	;;
verify)
	results=$3
	n=0
	while read -r line; do
		n=$((n + 1))
		# Not grep -q: it would end tr early, and pipefail count that.
		if tr -d '\r' <"$dir/console.out" 2>/dev/null | grep -xF "$line" >/dev/null; then
			echo "e2e-result: host_console_line_${n}_arrived pass"
		else
			echo "e2e-result: host_console_line_${n}_arrived fail ('$line' not in the console's output)"
		fi
	done < <(tr -d '\r' <"$results" | sed -n 's/^e2e-data: console_line //p')
	[ -f "$dir/pids" ] && kill $(cat "$dir/pids") 2>/dev/null
	rm -f "$dir/pids"
	;;
*) echo "kinds.sh: unknown command $cmd" >&2; exit 2 ;;
esac
