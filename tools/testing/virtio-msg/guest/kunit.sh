# SPDX-License-Identifier: GPL-2.0
#
# The KUnit suites, in the guest kernel itself (support/kunit.sh guest; not an
# e2e test). The guest boots with kunit.enable=1: the built-in suites (the
# kernel crate's doctests) have run by now, and each module's suites run as
# it is loaded. Their results (/sys/kernel/debug/kunit/SUITE/results, one KTAP
# document each) go to the second serial port as one KTAP document, which
# the host parses with kunit.py.
#
# A suite that should be there and is not (its module did not load) is
# reported "not ok", so a missing suite fails rather than shrinks the count.
. /tests/lib.sh

expected="rust_doctests_kernel virtio_msg_amp_pci virtio_msg_core virtio_msg_replay
	virtio_msg_spsc virtio_msg_wire"
for m in virtio_msg_spsc_kunit virtio_msg_wire_kunit virtio_msg virtio_msg_amp_pci; do
	insmod "$MODDIR/$m.ko" || echo "kunit: insmod $m failed"
done

dir=/sys/kernel/debug/kunit
suites=$( (ls "$dir"; echo "$expected" | tr -s ' \t' '\n\n') | sed '/^$/d' | sort -u)
{
	echo "KTAP version 1"
	echo "1..$(echo "$suites" | wc -l)"
	n=0
	for s in $suites; do
		n=$((n + 1))
		if [ -r "$dir/$s/results" ]; then
			# Each file is a document of its own ("KTAP version 1",
			# "1..1", the suite as test 1): the suite, renumbered.
			sed -e '1,2d' -e "\$s/^\(not ok\|ok\) 1 /\1 $n /" "$dir/$s/results"
		else
			echo "not ok $n $s # its module did not load or it did not run"
		fi
	done
} >/dev/ttyS1
