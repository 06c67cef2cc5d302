#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Host side of guest/soak.sh (see e2e.sh):
#
#   soak.sh setup DIR           create the disk image, print the emulator's
#                               arguments: a block and an entropy device on
#                               FIFO 0, a network device (TAP vmsgsoak0,
#                               10.78.0.1/24) and an entropy device on FIFO 1
#   soak.sh verify DIR RESULTS  the pattern the guest wrote before the soak is
#                               in the image, unchanged
#
# Needs root (the TAP interface).
set -uo pipefail

cmd=$1 dir=$2
case $cmd in
setup)
	rm -f "$dir/disk.img"
	truncate -s 16M "$dir/disk.img"
	echo "--fifos 2 --device 0:0:blk,file=$dir/disk.img --device 0:1:rng" \
		"--device 1:0:net,tap=vmsgsoak0,host-ip=10.78.0.1/24 --device 1:1:rng"
	;;
verify)
	results=$3
	read -r sum offset length <<<"$(tr -d '\r' <"$results" | sed -n 's/^e2e-data: kept_sha256 //p' | tail -n1)"
	if [ -n "${sum:-}" ] &&
		[ "$(dd if="$dir/disk.img" bs=4096 skip=$((offset / 4096)) count=$((length / 4096)) 2>/dev/null |
			sha256sum | cut -d' ' -f1)" = "$sum" ]; then
		echo "e2e-result: host_blk_kept_pattern_in_image pass"
	else
		echo "e2e-result: host_blk_kept_pattern_in_image fail (the image differs from the guest's pattern)"
	fi
	;;
*) echo "soak.sh: unknown command $cmd" >&2; exit 2 ;;
esac
