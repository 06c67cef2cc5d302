# SPDX-License-Identifier: GPL-2.0
#
# Helpers for guest-side tests. Every check prints one line
#   e2e-result: NAME pass|fail [reason]
# which the host-side runner (tools/testing/virtio-msg/e2e.sh) collects.

MODDIR=/lib/modules/virtio-msg

pass() { echo "e2e-result: $1 pass"; }
fail() { echo "e2e-result: $1 fail ${2:-}"; }

# check NAME COMMAND...: pass if COMMAND succeeds
check() {
	name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name" "($*)"; fi
}

load() { insmod "$MODDIR/$1.ko" "$@"; }
