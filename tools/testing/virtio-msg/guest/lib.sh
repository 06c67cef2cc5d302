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
