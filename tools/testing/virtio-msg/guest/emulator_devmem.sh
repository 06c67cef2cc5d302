# SPDX-License-Identifier: GPL-2.0
#
# The AMP PCI device served by virtio-msg-emulator (vfio-user), checked from
# the guest without any driver of ours: PCI identity and BAR sizes, BAR0
# registers, then GET_DEVICES and PING by hand through each FIFO's queues in
# BAR1 (pci-bar maps the sysfs resource files: this kernel has no /dev/mem).
# The expected devices come from the emulator arguments below, which e2e.sh
# passes to boot.sh --emulator.
#
# e2e-emulator: --fifos 2 --device 0:0:rng --device 0:5:rng --device 1:3:rng
. /tests/lib.sh

# What the emulator was told: the FIFO count and a device bitmap per FIFO.
fifos=1
set -- $(sed -n 's/^# e2e-emulator: //p' /tests/emulator_devmem.sh)
while [ $# -gt 0 ]; do
	case "$1" in
	--fifos) fifos=$2; shift 2 ;;
	--device)
		f=${2%%:*} rest=${2#*:}
		n=${rest%%:*}
		eval "expect$f=\$(( \${expect$f:-0} | (1 << $n) ))"
		shift 2 ;;
	*) shift ;;
	esac
done

dev=
for d in /sys/bus/pci/devices/*; do
	[ "$(cat "$d/vendor")" = 0x10ee ] && [ "$(cat "$d/device")" = 0x9039 ] &&
		[ "$(cat "$d/class")" = 0x088000 ] && dev=$d
done
check device_found test -n "$dev"
[ -n "$dev" ] || exit 0
echo "  device $dev"
check revision_1 test "$(cat "$dev/revision")" = 0x01

# BAR sizes from the resource file: "start end flags" per BAR.
bar_size() {
	set -- $(sed -n "$(($1 + 1))p" "$dev/resource")
	echo $(($2 - $1 + 1))
}
bar1=16384
while [ $bar1 -lt $((fifos * 16384)) ]; do bar1=$((bar1 * 2)); done
check bar0_16k test "$(bar_size 0)" = 16384
check bar1_size test "$(bar_size 1)" = $bar1
check bar2_msix test "$(bar_size 2)" = 4096

# Config space: capability list at 0x34 leads to MSI-X (id 0x11) with one
# vector per FIFO.
cfg() { od -An -tu1 -j "$1" -N 1 "$dev/config" | tr -d ' '; }
cap=$(cfg 52)
check msix_capability test "$(cfg "$cap")" = 17
check msix_vectors test "$(($(cfg $((cap + 2))) + 1))" = "$fifos"

echo 1 >"$dev/enable"
check memory_decoding test $(($(cfg 4) & 2)) = 2

r0=$dev/resource0 r1=$dev/resource1
check version_1 test "$(pci-bar "$r0" 0)" = 0x00000001
check features_0 test "$(pci-bar "$r0" 4)" = 0x00000000

# send FIFO WORD...: a message into the driver queue at its head, published,
# doorbell rung.
send() {
	fifo=$1
	q=$((fifo * 16384 + 4096))
	shift
	head=$(($(pci-bar "$r1" $q)))
	slot=$((q + 128 + head * 64))
	i=0
	for w in "$@"; do
		pci-bar "$r1" $((slot + 4 * i)) "$w"
		i=$((i + 1))
	done
	pci-bar "$r1" $q $(((head + 1) % 62))
	pci-bar "$r0" $((0x20 + 4 * fifo)) 1
}

# recv FIFO: waits (bounded) for a message on the device queue, prints its
# first five words in decimal, and consumes it.
recv() {
	q=$(($1 * 16384 + 8192))
	for _ in $(seq 100); do
		head=$(($(pci-bar "$r1" $q)))
		tail=$(($(pci-bar "$r1" $((q + 64)))))
		[ $head != $tail ] && break
		sleep 0.05
	done
	[ $head != $tail ] || return 1
	slot=$((q + 128 + tail * 64))
	words=
	for i in 0 1 2 3 4; do
		words="$words $(($(pci-bar "$r1" $((slot + 4 * i)))))"
	done
	pci-bar "$r1" $((q + 64)) $(((tail + 1) % 62))
	echo $words
}

f=0
while [ $f -lt "$fifos" ]; do
	token=$((0x1230 + f))
	# GET_DEVICES (bus request 0x02), 12 bytes: offset 0, count 32. Bus
	# replies carry token 0 whatever the request's, as the device model's
	# (drivers/virtio/virtio_msg/device-model/01-enumeration.txt).
	send $f 0x00000202 $((token | 12 << 16)) $((32 << 16))
	set -- $(recv $f)
	echo "  FIFO $f GET_DEVICES reply: $*"
	check fifo${f}_get_devices_reply test "${1:-}-${2:-}-${3:-}" = \
		"$((0x203))-$((18 << 16))-$((32 << 16))"
	bitmap=$(((${4:-0} >> 16 & 0xffff) | (${5:-0} & 0xffff) << 16))
	eval "want=\${expect$f:-0}"
	echo "  FIFO $f devices: bitmap $(printf 0x%08x $bitmap), expected $(printf 0x%08x $want)"
	check fifo${f}_devices test "$bitmap" = "$want"
	check fifo${f}_next_offset test $((${4:-0} & 0xffff)) = 32

	# PING (bus request 0x03) echoes its data (and not its token).
	send $f 0x00000302 $((token | 12 << 16)) 0x5a5a0000
	set -- $(recv $f)
	check fifo${f}_ping test "${1:-}-${2:-}-${3:-}" = \
		"$((0x303))-$((12 << 16))-$((0x5a5a0000))"
	f=$((f + 1))
done

# A doorbell for a FIFO the device does not have is ignored, not fatal.
pci-bar "$r0" $((0x20 + 4 * 7)) 1
check survives_bad_doorbell test "$(pci-bar "$r0" 0)" = 0x00000001
