#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# bench.sh: "make bench". Boots one guest (QEMU, TCG) with the same device
# types twice: behind virtio-msg (virtio-msg-emulator's AMP PCI device over
# vfio-user, one device per FIFO: blk 0, net 1, rng 2, console 3) and behind
# virtio-pci (virtio-blk-pci, virtio-net-pci, virtio-rng-pci,
# virtio-serial-pci with a virtconsole), runs guest/bench.sh in it, and
# writes build/bench/results.json and build/bench/results.svg, and the
# table on this terminal (support/bench.py). README.md, "Benchmark",
# explains each figure.
#
# Needs root: the network devices are TAP interfaces (vmsgbench0,
# 10.79.0.1/24, made by the emulator; vmsgbench1, 10.79.1.1/24, made here
# for QEMU). The guest kernel is the benchmark variant (VMSG_VARIANT=bench,
# build/out-bench: the test guest's configuration without lockdep,
# atomic-sleep checks and kmemleak), which "make bench" builds first; run
# without it, the test guest's (build/out) is used, and the output says so.
# While the guest's sampled runs go, support/sampling.py samples where its
# vCPUs are through QEMU's gdbstub (on 127.0.0.1:BENCH_GDB_PORT, default
# 5592; build/bench/samples.txt), and the instruction counter
# (support/insncount.c, a TCG plugin built here and loaded into QEMU)
# counts the kernel's instructions in them (build/bench/insns.txt).
# BENCH_SAMPLE=0 leaves both out.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
here=$top/tools/testing/virtio-msg
dir=$top/build/bench
TAP_MSG=vmsgbench0 TAP_PCI=vmsgbench1
HOST_MSG=10.79.0.1 HOST_PCI=10.79.1.1
SINK_PORT=5590 SOURCE_PORT=5591
GDB_PORT=${BENCH_GDB_PORT:-5592} SAMPLE=${BENCH_SAMPLE:-1}
DISK_MIB=64
SECS=${BENCH_SECS:-3} REPS=${BENCH_REPS:-3}
TIMEOUT=${BENCH_TIMEOUT:-600}

[ "$(id -u)" = 0 ] || { echo "bench: needs root (TAP interfaces)" >&2; exit 2; }
if ip link show $TAP_PCI >/dev/null 2>&1 || ip link show $TAP_MSG >/dev/null 2>&1; then
	echo "bench: $TAP_MSG or $TAP_PCI exists: is another bench running?" >&2
	exit 2
fi

mkdir -p "$dir"
rm -f "$dir"/results.* "$dir"/guest.log* "$dir"/*.img "$dir"/console.sock "$dir"/samples.txt \
	"$dir"/insns.*
# Same size, same (random) contents, both in the host's page cache.
head -c $((DISK_MIB << 20)) /dev/urandom >"$dir/msg.img"
cp "$dir/msg.img" "$dir/pci.img"

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	ip link del $TAP_PCI 2>/dev/null || true
	rm -f "$dir"/*.img "$dir/console.sock" "$dir/insns.ctl"
}
trap cleanup EXIT

ip tuntap add dev $TAP_PCI mode tap
ip addr add $HOST_PCI/24 dev $TAP_PCI
ip link set $TAP_PCI up

# The network peer on this host: a sink and a source on both addresses.
python3 "$top/support/bench.py" peer $SINK_PORT $SOURCE_PORT $HOST_MSG $HOST_PCI \
	>"$dir/peer.log" 2>&1 &
pids+=($!)

emulator="--fifos 4 --log-level warn"
emulator+=" --device 0:0:blk,file=$dir/msg.img"
emulator+=" --device 1:0:net,tap=$TAP_MSG,host-ip=$HOST_MSG/24"
emulator+=" --device 2:0:rng"
emulator+=" --device 3:0:console,socket=$dir/console.sock"

# virtio-pci: what the emulator's devices offer, as far as QEMU lets us say
# it: one block queue (the emulator has one), a network device with no
# offloads (the emulator has none: every frame whole, 12-byte header).
nooffload=csum=off,guest_csum=off,gso=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off
nooffload+=,host_tso4=off,host_tso6=off,host_ecn=off,host_ufo=off,mrg_rxbuf=on,mq=off
qemu_args=(
	-drive "file=$dir/pci.img,format=raw,if=none,id=pciblk,cache=writeback"
	-device virtio-blk-pci,drive=pciblk,num-queues=1
	-netdev "tap,id=pcinet,ifname=$TAP_PCI,script=no,downscript=no,vhost=off"
	-device "virtio-net-pci,netdev=pcinet,mac=52:54:00:79:01:02,$nooffload"
	-object rng-random,id=pcirng,filename=/dev/urandom
	-device virtio-rng-pci,rng=pcirng
	-device virtio-serial-pci
	-chardev null,id=pcicon
	-device virtconsole,chardev=pcicon
)
if [ "$SAMPLE" = 1 ]; then
	gcc -O2 -Wall -Werror -shared -fPIC -fvisibility=hidden -pthread \
		-o "$dir/insncount.so" "$top/support/insncount.c"
	mkfifo "$dir/insns.ctl"
	qemu_args+=(-gdb "tcp:127.0.0.1:$GDB_PORT"
		-plugin "$dir/insncount.so,ctl=$dir/insns.ctl,out=$dir/insns.txt")
	python3 "$top/support/sampling.py" sample "$GDB_PORT" "$dir/guest.log.results" \
		"$dir/samples.txt" "$dir/insns.ctl" 2>"$dir/sampling.log" &
	sampler=$!
	pids+=($sampler)
fi

case "${VMSG_VARIANT:-}" in
bench) echo "bench: guest kernel build/out-bench: no lockdep, atomic-sleep checks or kmemleak" ;;
*) echo "bench: guest kernel build/out${VMSG_VARIANT:+-$VMSG_VARIANT}: the test guest's, with its debug options (lockdep...): figures not for claims" ;;
esac
echo "bench: booting the guest (TCG); the whole run takes about 4 minutes"
start=$(date +%s)
rc=0
"$here/boot.sh" --test bench --log "$dir/guest.log" --timeout "$TIMEOUT" \
	--append "vmsg.bench_secs=$SECS vmsg.bench_reps=$REPS vmsg.bench_sample=$SAMPLE rng_core.default_quality=0" \
	--emulator "$emulator" -- "${qemu_args[@]}" || rc=$?
echo "bench: guest ran $(($(date +%s) - start)) s (log $dir/guest.log)"
[ $rc = 0 ] || echo "bench: the guest exited with status $rc" >&2
# The sampler ends with QEMU's gdbstub.
[ -z "${sampler:-}" ] || timeout 10 tail --pid="$sampler" -f /dev/null || true
status=0
python3 "$top/support/bench.py" report "$dir/guest.log.results" "$dir" || status=1
# The figures of a run that went wrong are worth little: say so.
if grep -nE 'BUG:|WARNING:|Oops|Call Trace:|kernel panic|possible recursive locking|circular locking' \
	"$dir/guest.log" | head -n 5; then
	echo "bench: the guest kernel logged the above (log $dir/guest.log)" >&2
	status=1
fi
if grep -nE ' (ERROR|WARN) ' "$dir/guest.log.emulator" | head -n 5; then
	echo "bench: the emulator logged the above (log $dir/guest.log.emulator)" >&2
	status=1
fi
exit $status
