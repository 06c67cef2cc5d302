# SPDX-License-Identifier: GPL-2.0
#
# The guest side of "make bench" (support/bench.sh boots it; not an e2e
# test, e2e.sh leaves it out). The same device types are here twice: behind
# virtio-pci (built in, bound at boot) and behind virtio-msg (the emulator's
# AMP PCI device, one device per FIFO: blk 0, net 1, rng 2, console 3, bound
# when our modules are loaded). Every measurement is printed as one line
# "bench: ..." on the second serial port; the host side does the arithmetic.
#
#   bench: probe TYPE MESSAGE SENT RECEIVED     a line of the transport's stats
#                                               of the bus TYPE is alone on,
#                                               right after the devices bound
#   bench: idle TYPE SECONDS MESSAGES           messages on TYPE's FIFO while
#                                               nothing used the device
#   bench: run FIGURE TRANSPORT REP key=value...
#                                               one run of vmsg-io, with the
#                                               deltas of the counters
#   bench: cost FIGURE TRANSPORT key=value...   a run of vmsg-io under the
#                                               function profiler (see cost())
#   bench: access KIND NS                       what one access to the AMP PCI
#                                               device costs (access_costs())
#   bench: sample start|stop FIGURE TRANSPORT UPTIME CPUS [key=value...]
#                                               a run of vmsg-io the host
#                                               samples (see sampled())
#   bench: ksym ADDRESS NAME MODULE             a function of our modules, for
#                                               the host to name the samples
#   bench: note TEXT                            something the host should say
. /tests/lib.sh

# Seconds per run and runs per figure; "make bench BENCH_SECS=1 BENCH_REPS=1"
# passes others on the kernel command line.
SECS=3
REPS=3
SAMPLE=0
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	vmsg.bench_secs=*) SECS=${arg#*=} ;;
	vmsg.bench_reps=*) REPS=${arg#*=} ;;
	vmsg.bench_sample=*) SAMPLE=${arg#*=} ;;
	esac
done
HOST_MSG=10.79.0.1 GUEST_MSG=10.79.0.2
HOST_PCI=10.79.1.1 GUEST_PCI=10.79.1.2
SINK_PORT=5590 SOURCE_PORT=5591
HWRNG=/sys/class/misc/hw_random

emit() {
	echo "bench: $*"
	[ -c /dev/ttyS1 ] && echo "bench: $*" >/dev/ttyS1
}

# A kmemleak scan (the first comes 60 s after boot) would stall one run.
[ -w /sys/kernel/debug/kmemleak ] && echo scan=off >/sys/kernel/debug/kmemleak
# Whether the kernel charges every lock and allocation (lockdep, kmemleak).
debug=
[ -e /proc/lockdep ] && debug="$debug lockdep"
[ -e /sys/kernel/debug/kmemleak ] && debug="$debug kmemleak"
emit note "kernel $(uname -r), lock and allocation debugging:${debug:- none}"

# transport_of VIRTIO-DEVICE: pci, msg or loopback, from its parent: a
# virtio-pci device sits under its own PCI function (vendor 0x1af4), a
# virtio-msg device under the auxiliary device of its bus (under the AMP PCI
# function, or the loopback test bus's faux device).
transport_of() {
	parent=$(dirname "$(readlink -f "$1")")
	case "$parent" in
	*loopback*) echo loopback ;;
	*) if [ "$(cat "$parent/vendor" 2>/dev/null)" = 0x1af4 ]; then echo pci; else echo msg; fi ;;
	esac
}

# The transport's debugfs directories of every virtio-msg bus, oldest first. The
# AMP PCI driver registers one bus per FIFO, in FIFO order, ids increasing.
msg_buses() {
	ls -d /sys/kernel/debug/virtio_msg-*.bus.* 2>/dev/null | sed 's/.*\.//' | sort -n |
		while read -r id; do ls -d /sys/kernel/debug/virtio_msg-*.bus.$id; done
}

emit note rng_before_modules "$(cat $HWRNG/rng_available)"
insmod $MODDIR/virtio_msg.ko || emit note "insmod virtio_msg failed"
insmod $MODDIR/virtio_msg_amp_pci.ko || emit note "insmod virtio_msg_amp_pci failed"

# Four virtio-pci devices since boot and four virtio-msg ones: the moment the
# last one has its driver, the probe is over. Take the stats at once.
wait_for 8 || emit note "not every device bound: $(ls /sys/bus/virtio/drivers/*/ | grep -c virtio) of 8"
i=0
for s in $(msg_buses); do
	cat "$s/stats" >/tmp/probe.$i
	eval "stats_fifo$i=$s/stats"
	i=$((i + 1))
done
[ $i = 4 ] || emit note "$i virtio-msg buses, not 4"
# One device per FIFO, by our layout.
fifo_of_blk=0 fifo_of_net=1 fifo_of_rng=2 fifo_of_console=3
for type in blk net rng console; do
	eval "f=\$fifo_of_$type"
	awk -v t=$type '/^[A-Z_]+ +[0-9]+ +[0-9]+$/ { print t, $1, $2, $3 }' /tmp/probe.$f |
		while read -r line; do emit probe "$line"; done
done

# The devices of each type and transport.
pci=$(for d in /sys/bus/pci/devices/*; do [ "$(cat $d/vendor):$(cat $d/device)" = 0x10ee:0x9039 ] && echo $d; done)
amp=/sys/kernel/debug/virtio_msg_amp_pci-$(basename "$pci")
for d in /sys/bus/virtio/devices/*; do
	case $(cat "$d/device") in
	0x0001) type=net ;;
	0x0002) type=blk ;;
	0x0003) type=console ;;
	0x0004) type=rng ;;
	*) continue ;;
	esac
	eval "dev_${type}_$(transport_of "$d")=$d"
done
emit note devices "blk: msg=${dev_blk_msg:-none} pci=${dev_blk_pci:-none}; net: msg=${dev_net_msg:-none} pci=${dev_net_pci:-none}"

# Idle traffic per device type, before anything uses the devices.
idle_total() { sed -n 's/^sent: //p; s/^received: //p' "$amp/fifo$1" | awk '{ n += $1 } END { print n + 0 }'; }
for type in blk net rng console; do eval "idle0_$type=\$(idle_total \$fifo_of_$type)"; done
sleep 3
for type in blk net rng console; do
	eval "before=\$idle0_$type"
	emit idle $type 3 $(($(idle_total $(eval echo \$fifo_of_$type)) - before))
done

# The block devices: vd* of each transport, null_blk and brd.
for b in /sys/block/vd*; do
	[ -e "$b" ] || continue
	eval "blk_$(transport_of "$b/device")=/dev/$(basename $b)"
done
dd if=/dev/urandom of=/dev/ram0 bs=1M count=64 2>/dev/null || emit note "brd: /dev/ram0 not written"
emit note blk "msg=${blk_msg:-none} pci=${blk_pci:-none} null=/dev/nullb0 brd=/dev/ram0"

# The network interfaces.
for n in /sys/class/net/eth*; do
	[ -e "$n/device" ] || continue
	eval "net_$(transport_of "$n/device")=$(basename $n)"
done
emit note net "msg=${net_msg:-none} pci=${net_pci:-none}"
ip link set "$net_msg" up && ip addr add $GUEST_MSG/24 dev "$net_msg"
ip link set "$net_pci" up && ip addr add $GUEST_PCI/24 dev "$net_pci"
for h in $HOST_MSG $HOST_PCI; do
	ping -c 1 -W 10 $h >/dev/null 2>&1 || ping -c 1 -W 10 $h >/dev/null 2>&1 || emit note "no answer from $h"
done

# The entropy devices: /dev/hwrng reads from the one selected. virtio-pci's
# came at boot; every other one appeared since.
rng_pci=$(tr ' ' '\n' <$HWRNG/rng_available | grep '^virtio_rng' | head -n1)
rng_msg=$(tr ' ' '\n' <$HWRNG/rng_available | grep '^virtio_rng' | grep -vx "$rng_pci" | head -n1)
emit note rng "msg=$rng_msg pci=$rng_pci"

# Counters around a run. Everything is read into variables NAME_0 / NAME_1.
cpu() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
# dev_irqs VIRTIO-DEVICE: its interrupts in /proc/interrupts (virtio-pci
# names its vectors after the virtio device: virtioN-config, virtioN-req.0)
dev_irqs() {
	awk -v n="$(basename "$1")-" '{ for (i = 2; i <= NF; i++) if (index($i, n) == 1) { for (c = 2; c < i; c++) if ($c ~ /^[0-9]+$/) s += $c; break } } END { print s + 0 }' /proc/interrupts
}
fifo_counter() { sed -n "s/^$2: //p" "$amp/fifo$1"; }
stat_counter() { awk -v m="$2" -v c="$3" '$1 == m { print $c }' "$1"; }
snapshot() { # SUFFIX TRANSPORT TYPE DEVICE
	s=$1 t=$2 type=$3 dev=$4
	set -- $(cpu)
	eval "busy_$s=$1 ticks_$s=$2"
	eval "ctxt_$s=$(awk '$1 == "ctxt" { print $2 }' /proc/stat)"
	eval "intr_$s=$(awk '$1 == "intr" { print $2 }' /proc/stat)"
	pkts=0
	case $type in
	net) eval "ifc=\$net_$t"
		[ -n "$ifc" ] && pkts=$(($(cat /sys/class/net/$ifc/statistics/rx_packets) + $(cat /sys/class/net/$ifc/statistics/tx_packets))) ;;
	esac
	eval "pkts_$s=$pkts"
	devirq=0 sent=0 recv=0 bells=0 avail=0 used=0
	if [ -n "$dev" ] && [ "$t" = pci ]; then
		devirq=$(dev_irqs "$dev")
	elif [ -n "$dev" ]; then
		if [ "$type" = loopback ]; then
			st=$stats_loop
		else
			eval "f=\$fifo_of_$type"
			eval "st=\$stats_fifo$f"
		fi
		avail=$(stat_counter "$st" EVENT_AVAIL 2)
		used=$(stat_counter "$st" EVENT_USED 3)
		if [ "$type" = loopback ]; then
			sent=$(awk '/^[A-Z_]+ +[0-9]+ +[0-9]+$/ { s += $2 } END { print s + 0 }' "$st")
			recv=$(awk '/^[A-Z_]+ +[0-9]+ +[0-9]+$/ { s += $3 } END { print s + 0 }' "$st")
		else
			sent=$(fifo_counter $f sent)
			recv=$(fifo_counter $f received)
			bells=$(fifo_counter $f doorbells)
			devirq=$(fifo_counter $f interrupts)
		fi
	fi
	eval "devirq_$s=$devirq sent_$s=$sent recv_$s=$recv bells_$s=$bells avail_$s=$avail used_$s=$used"
}

# run FIGURE TRANSPORT REP TYPE DEVICE vmsg-io ARGS...
run() {
	fig=$1 t=$2 rep=$3 type=$4 dev=$5
	shift 5
	if [ "$type" != none ] && [ -z "$dev" ]; then
		[ "$rep" = 1 ] && emit note "$fig $t: no such device, not measured"
		return
	fi
	snapshot 0 "$t" "$type" "$dev"
	res=$(vmsg-io "$@" 2>/tmp/vmsg-io.err) || {
		emit note "$fig $t rep $rep failed: $(head -n1 /tmp/vmsg-io.err)"
		return
	}
	snapshot 1 "$t" "$type" "$dev"
	d=""
	for k in busy ticks ctxt intr pkts devirq sent recv bells avail used; do
		eval "d=\"\$d $k=\$((${k}_1 - ${k}_0))\""
	done
	emit run "$fig" "$t" "$rep" "$res$d"
}

# The driver's own cost, from the function profiler, in a run of its own (the
# profiler slows what it times): per kick, virtqueue_notify() (the transport's
# notify up to the doorbell, or virtio-pci's MMIO write); per interrupt,
# handle_irq_event() (the handler, from the vector on) and, within it,
# vring_interrupt() (the virtqueue callback and what it completes), so that
# handle_irq_event() less vring_interrupt() is the path from the interrupt to
# the virtqueue. Times include the callees', in ns summed over the CPUs.
# A kernel built for speed inlines virtqueue_notify() into virtqueue_kick(),
# which virtio-rng kicks with (virtio-blk calls virtqueue_notify() itself):
# a run with no virtqueue_notify() counts virtqueue_kick() instead (its
# kick_prepare, a few dozen instructions of the virtio core, included).
# Within both, the accesses to the device are the device's time (under TCG
# each is a trap into QEMU; a doorbell over vfio-user, a message to the
# emulator's process). The MMIO accessors cannot be profiled (the C helpers
# behind Rust's have no ftrace entry, nor has iowrite16()), so the AMP PCI
# bus counts them itself (debugfs bar1_reads, bar1_writes, doorbells, and
# doorbell_ns, the time of the one doorbell in 16 it times, doorbells_timed)
# and what one access to BAR1 costs is measured apart (see access_costs):
#
#   bench: cost FIGURE TRANSPORT ops=N ... notify=HITS,NS vring=HITS,NS irq=HITS,NS [reads=N writes=N bells=N bellns=N timed=N]
TRACE=/sys/kernel/debug/tracing
COST_FUNCS="virtqueue_notify virtqueue_kick vring_interrupt handle_irq_event"
if [ -w $TRACE/function_profile_enabled ] && echo "$COST_FUNCS" >$TRACE/set_ftrace_filter 2>/dev/null; then
	emit note "cost: function profiler on $(tr '\n' ' ' <$TRACE/set_ftrace_filter)"
else
	emit note "cost: no function profiler in this kernel: driver cost not measured"
	TRACE=
fi
profile_sum() { # FUNCTION: "HITS,NS" over every CPU's trace_stat/function*
	cat $TRACE/trace_stat/function* 2>/dev/null | awk -v f="$1" '
		$1 == f { hits += $2; t = $3; if ($4 == "ms") t *= 1000; if ($4 == "s") t *= 1000000; ns += t * 1000 }
		END { printf "%d,%d", hits, ns }'
}
# access_counts FIFO: the AMP PCI bus's accesses to the device so far.
access_counts() {
	echo "$(fifo_counter $1 bar1_reads) $(fifo_counter $1 bar1_writes) $(fifo_counter $1 doorbells) $(fifo_counter $1 doorbell_ns) $(fifo_counter $1 doorbells_timed)"
}
# irqs_of TRANSPORT DEVICE: the interrupts of the device (virtio-msg: its
# FIFO's vector; virtio-pci: every vector of its PCI function).
irqs_of() {
	case $1 in
	msg) ls "$pci/msi_irqs" | sort -n | sed -n "$((fifo + 1))p" ;;
	pci) ls "$(dirname "$(readlink -f "$2")")/msi_irqs" ;;
	esac
}
# irqs_to CPUS IRQ...: where those interrupts go.
irqs_to() {
	cpus=$1
	shift
	for i in "$@"; do echo "$cpus" >/proc/irq/$i/smp_affinity_list 2>/dev/null; done
}
# pin_io: for the run of $fig on $t (device $dev), the I/O to CPU 0 ($pin, a
# taskset) and the device's interrupts to CPU 1 (see cost()); sets fifo (the
# device's FIFO, virtio-msg only), irqs and pin. unpin_io: interrupts to
# every CPU again.
pin_io() {
	fifo=
	case $t in msg) eval "fifo=\$fifo_of_${fig%%-*}" ;; esac
	irqs=$(irqs_of $t "$dev")
	pin=
	if [ "$(nproc)" -ge 2 ]; then
		irqs_to 1 $irqs
		pin="taskset -c 0"
	fi
}
unpin_io() {
	irqs_to 0-$(($(nproc) - 1)) $irqs
}

# cost FIGURE TRANSPORT DEVICE vmsg-io ARGS...
#
# The I/O runs on CPU 0 and the device's interrupts go to CPU 1: an interrupt
# taken on the kicking CPU inside virtqueue_notify() (a completion raised
# while the doorbell's write stalls the CPU, delivered as the kick enables
# interrupts again) would count in both the kick and the interrupt.
cost() {
	[ -n "$TRACE" ] && [ -n "$3" ] || return
	fig=$1 t=$2 dev=$3
	shift 3
	pin_io
	[ -n "$fifo" ] && a0=$(access_counts $fifo)
	echo 1 >$TRACE/function_profile_enabled # starting again clears the counts
	res=$($pin vmsg-io "$@" 2>/tmp/vmsg-io.err)
	rc=$?
	echo 0 >$TRACE/function_profile_enabled
	unpin_io
	[ $rc = 0 ] || { emit note "cost $fig $t failed: $(head -n1 /tmp/vmsg-io.err)"; return; }
	accesses=
	if [ -n "$fifo" ]; then
		set -- $a0 $(access_counts $fifo)
		accesses="reads=$(($6 - $1)) writes=$(($7 - $2)) bells=$(($8 - $3)) bellns=$(($9 - $4)) timed=$((${10} - $5))"
	fi
	notify=$(profile_sum virtqueue_notify)
	case $notify in 0,*) notify=$(profile_sum virtqueue_kick) ;; esac
	emit cost "$fig" "$t" "$res" "notify=$notify" \
		"vring=$(profile_sum vring_interrupt)" "irq=$(profile_sum handle_irq_event)" $accesses
}

# sampled FIGURE TRANSPORT DEVICE vmsg-io ARGS...: a run of its own, pinned as
# in cost(), that the host samples (support/sampling.py: QEMU's gdbstub stops
# the guest every 2 ms and reads where each vCPU is) between the start and
# the stop line, which carry the guest's uptime and CPU count, so that the
# host can turn the share of samples in a function into time per I/O. Unlike
# the function profiler, this sees the Rust code and the MMIO accessors.
sampled() {
	[ "$SAMPLE" = 1 ] && [ -n "$3" ] || return
	fig=$1 t=$2 dev=$3
	shift 3
	pin_io
	emit sample start "$fig" "$t" "$(cut -d' ' -f1 /proc/uptime)" "$(nproc)"
	# Give the host a moment to see the line before the run starts.
	sleep 0.2
	res=$($pin vmsg-io "$@" 2>/tmp/vmsg-io.err)
	rc=$?
	emit sample stop "$fig" "$t" "$(cut -d' ' -f1 /proc/uptime)" "$(nproc)" "$res"
	unpin_io
	[ $rc = 0 ] || emit note "sampled $fig $t failed: $(head -n1 /tmp/vmsg-io.err)"
}

# module_symbols: the functions of our modules loaded now, for the host
# (module addresses are nowhere else); on the second serial port only.
module_symbols() {
	[ "$SAMPLE" = 1 ] || return
	grep -E '^[0-9a-f]+ [tT] .*\[virtio_msg' /proc/kallsyms |
		sed 's/^\([0-9a-f]*\) [tT] /bench: ksym \1 /' >/dev/ttyS1
}

# rng_use NAME: /dev/hwrng reads from NAME. (The entropy pool's filler
# thread does not read in between: rng_core.default_quality=0.)
rng_use() {
	echo "$1" >$HWRNG/rng_current
	[ "$(cat $HWRNG/rng_current)" = "$1" ] || emit note "rng_current is $(cat $HWRNG/rng_current), not $1"
}

for rep in $(seq $REPS); do
	for qd in 1 16; do
		run blk-qd$qd msg $rep blk "$dev_blk_msg" rand -d -q $qd -t $SECS "$blk_msg"
		run blk-qd$qd pci $rep blk "$dev_blk_pci" rand -d -q $qd -t $SECS "$blk_pci"
		run blk-qd$qd null_blk $rep none "" rand -d -q $qd -t $SECS /dev/nullb0
		run blk-qd$qd brd $rep none "" rand -d -q $qd -t $SECS /dev/ram0
	done
	run net-tx msg $rep net "$dev_net_msg" tcp-send -b 65536 -t $SECS $HOST_MSG $SINK_PORT
	run net-tx pci $rep net "$dev_net_pci" tcp-send -b 65536 -t $SECS $HOST_PCI $SINK_PORT
	run net-rx msg $rep net "$dev_net_msg" tcp-recv -b 65536 -t $SECS $HOST_MSG $SOURCE_PORT
	run net-rx pci $rep net "$dev_net_pci" tcp-recv -b 65536 -t $SECS $HOST_PCI $SOURCE_PORT
	rng_use "$rng_msg"
	run rng msg $rep rng "$dev_rng_msg" seq -b 64 -t $SECS /dev/hwrng
	rng_use "$rng_pci"
	run rng pci $rep rng "$dev_rng_pci" seq -b 64 -t $SECS /dev/hwrng
done
# What one access to the AMP PCI device costs, measured from user space on
# the same path (the BAR's sysfs resource file: under TCG every access to it
# reaches QEMU's memory map, as the driver's do): a read and a write of BAR1
# (the last word of FIFO 3's window, which no one uses) and, for comparison
# with what the bus counts under load, a doorbell (FIFO 2's, whose entropy
# device is idle now: the device side finds nothing new). Idle, with nothing
# else running: under load an access may cost more, so the device's share of
# the driver's time computed with them is low, and the driver's own high.
#
#   bench: access bar1_read|bar1_write|doorbell NS
access_costs() {
	[ -n "$pci" ] || return
	spare=$((3 * 16384 + 16380))
	emit access bar1_read "$(pci-bar -n 4000 "$pci/resource1" $spare)"
	emit access bar1_write "$(pci-bar -n 4000 "$pci/resource1" $spare 0)"
	emit access doorbell "$(pci-bar -n 400 "$pci/resource0" $((0x20 + 4 * fifo_of_rng)) 0)"
}
[ -n "$TRACE" ] && access_costs
# The profiled runs, then the sampled ones: the same I/O each.
for how in cost sampled; do
	for qd in 1 16; do
		$how blk-qd$qd msg "$dev_blk_msg" rand -d -q $qd -t $SECS "$blk_msg"
		$how blk-qd$qd pci "$dev_blk_pci" rand -d -q $qd -t $SECS "$blk_pci"
	done
	rng_use "$rng_msg"
	$how rng msg "$dev_rng_msg" seq -b 64 -t $SECS /dev/hwrng
	rng_use "$rng_pci"
	$how rng pci "$dev_rng_pci" seq -b 64 -t $SECS /dev/hwrng
done
module_symbols

# Whatever went wrong on a bus, for the host to show.
stats_problems() {
	for s in /sys/kernel/debug/virtio_msg-*/stats; do
		grep -E '^(timeouts|late|unsolicited|malformed|broken_devices|send_errors): [1-9]' "$s" |
			while read -r line; do emit note "$(basename "$(dirname "$s")") $line"; done
	done
}
stats_problems

# The loopback test bus: an in-kernel entropy device and a memory-backed
# block device, no QEMU at all. The AMP PCI bus goes first, so that its
# devices' interrupts and work do not count here.
rmmod virtio_msg_amp_pci || emit note "rmmod virtio_msg_amp_pci failed"
known=$(cat $HWRNG/rng_available)
insmod $MODDIR/virtio_msg_loopback.ko blk_mib=32 || emit note "insmod virtio_msg_loopback failed"
for _ in $(seq 100); do
	rng_loop=$(tr ' ' '\n' <$HWRNG/rng_available | grep '^virtio_rng' |
		while read -r r; do echo " $known " | grep -q " $r " || echo "$r"; done | head -n1)
	[ -n "$rng_loop" ] && break
	sleep 0.05
done
for _ in $(seq 100); do
	for d in /sys/bus/virtio/devices/*; do
		[ "$(transport_of "$d")" = loopback ] || continue
		case $(cat "$d/device") in
		0x0004) dev_rng_loop=$d ;;
		0x0002) dev_blk_loop=$d blk_loop=/dev/$(ls "$d/block" 2>/dev/null) ;;
		esac
	done
	[ -n "$dev_rng_loop" ] && [ -b "${blk_loop:-/nonexistent}" ] && break
	sleep 0.05
done
stats_loop=$(msg_buses | tail -n1)/stats
emit note rng_loopback "$rng_loop ${dev_rng_loop:-none} $stats_loop"
emit note blk_loopback "${blk_loop:-none} ${dev_blk_loop:-none}"
rng_use "$rng_loop"
for rep in $(seq $REPS); do
	run rng loopback $rep loopback "${dev_rng_loop:-}" seq -b 64 -t $SECS /dev/hwrng
	for qd in 1 16; do
		run blk-qd$qd loopback $rep loopback "${dev_blk_loop:-}" rand -d -q $qd -t $SECS "$blk_loop"
	done
done
for how in cost sampled; do
	for qd in 1 16; do
		$how blk-qd$qd loopback "${dev_blk_loop:-}" rand -d -q $qd -t $SECS "$blk_loop"
	done
	$how rng loopback "${dev_rng_loop:-}" seq -b 64 -t $SECS /dev/hwrng
done
module_symbols

stats_problems
emit done
