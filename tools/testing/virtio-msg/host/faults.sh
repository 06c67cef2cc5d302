#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Host side of the fault tests (guest/fault_*.sh, see e2e.sh):
#
#   faults.sh setup DIR           create the disk image, print the emulator's
#                                 arguments: one FIFO with a block device
#                                 (device number 0) and two entropy devices
#                                 (1 and 2); each test adds its --fault
#   faults.sh verify DIR RESULTS  nothing to check on this side
set -uo pipefail

cmd=$1 dir=$2
case $cmd in
setup)
	rm -f "$dir/disk.img"
	truncate -s 4M "$dir/disk.img"
	echo "--fifos 1 --device 0:0:blk,file=$dir/disk.img --device 0:1:rng --device 0:2:rng"
	;;
verify) ;;
*) echo "faults.sh: unknown command $cmd" >&2; exit 2 ;;
esac
