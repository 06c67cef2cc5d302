# SPDX-License-Identifier: GPL-2.0
#
# Helpers for guest-side tests. Every check prints one line
#   e2e-result: NAME pass|fail [reason]
# which the host-side runner (tools/testing/virtio-msg/e2e.sh) collects from
# the second serial port.

MODDIR=/lib/modules/virtio-msg

# Results go to the console for the log, and to the second serial port
# (ttyS1), which nothing else writes to, for the host-side runner.
result() {
	echo "e2e-result: $*"
	[ -c /dev/ttyS1 ] && echo "e2e-result: $*" >/dev/ttyS1
}
pass() { result "$1 pass"; }
fail() { result "$1 fail ${2:-}"; }

# check NAME COMMAND...: pass if COMMAND succeeds
check() {
	name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name" "($*)"; fi
}

load() { insmod "$MODDIR/$1.ko" "$@"; }

# data NAME VALUE...: a fact for the host-side check (tools/testing/virtio-msg/host/)
data() {
	echo "e2e-data: $*"
	[ -c /dev/ttyS1 ] && echo "e2e-data: $*" >/dev/ttyS1
}

# virtio_dev ID: the first virtio device of device id ID (decimal), bound to a driver,
# waiting up to 10 s for it; empty if there is none.
virtio_dev() {
	want=$(printf '0x%04x' "$1")
	for _ in $(seq 100); do
		for d in /sys/bus/virtio/devices/*; do
			[ -e "$d/device" ] && [ "$(cat "$d/device")" = "$want" ] && [ -e "$d/driver" ] && {
				echo "$d"
				return
			}
		done
		sleep 0.1
	done
}

# wait_for COUNT: wait up to 20 s until COUNT virtio devices have a driver
wait_for() {
	for _ in $(seq 200); do
		n=0
		for d in /sys/bus/virtio/devices/*; do [ -e "$d/driver" ] && n=$((n + 1)); done
		[ "$n" -ge "$1" ] && return 0
		sleep 0.1
	done
	return 1
}
