#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Host side of guest/fault_dead_fifo.sh (see e2e.sh):
#
#   dead_fifo.sh setup DIR           create two disk images, print the
#                                    emulator's arguments: two FIFOs, each
#                                    with a disk (device number 0; 4 MiB on
#                                    FIFO 0, 8 MiB on FIFO 1, so the guest
#                                    tells them apart) and an entropy device
#                                    (1)
#   dead_fifo.sh verify DIR RESULTS  nothing to add
set -uo pipefail

cmd=$1 dir=$2
case $cmd in
setup)
	rm -f "$dir"/disk*.img
	truncate -s 4M "$dir/disk0.img"
	truncate -s 8M "$dir/disk1.img"
	echo "--fifos 2 --device 0:0:blk,file=$dir/disk0.img --device 0:1:rng" \
		"--device 1:0:blk,file=$dir/disk1.img --device 1:1:rng"
	;;
verify) ;;
*) echo "dead_fifo.sh: unknown command $cmd" >&2; exit 2 ;;
esac
