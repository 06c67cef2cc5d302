# SPDX-License-Identifier: GPL-2.0
#
# Load the virtio-msg wire-format KUnit module in the guest, check that its
# suite ran and passed (its KTAP output in the kernel log), and unload it.
# The guest kernel runs no KUnit suite unless told to: this boot enables
# KUnit for this suite alone.
# e2e-append: kunit.enable=1 kunit.filter_glob=virtio_msg_wire
. /tests/lib.sh

mark="vmsg-e2e-$$"
echo "$mark" >/dev/kmsg
check module_load insmod $MODDIR/virtio_msg_wire_kunit.ko
check module_listed grep -q '^virtio_msg_wire_kunit ' /proc/modules
log=$(dmesg | sed -n "/$mark/,\$p")
echo "$log" | grep -E '(not )?ok [0-9]+ ' | sed 's/^/  /'
check suite_passed sh -c "echo \"\$1\" | grep -qE '^(\[[ 0-9.]*\] )? *ok [0-9]+ virtio_msg_wire\$'" _ "$log"
check no_case_failed sh -c "! echo \"\$1\" | grep -q 'not ok'" _ "$log"
# Every case the suite plans ("    1..N") reported ok, and there are at least 11.
plan=$(echo "$log" | sed -nE 's/^(\[[ 0-9.]*\] )?    1\.\.([0-9]+)$/\2/p' | head -1)
cases=$(echo "$log" | grep -cE '^(\[[ 0-9.]*\] )?    ok [0-9]+ [a-z0-9_]+$')
check cases_ran test "${plan:-0}" -ge 11 -a "$cases" = "${plan:-0}"
check module_unload rmmod virtio_msg_wire_kunit
check module_gone sh -c "! grep -q '^virtio_msg_wire_kunit ' /proc/modules"
