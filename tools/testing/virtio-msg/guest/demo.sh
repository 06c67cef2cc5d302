# SPDX-License-Identifier: GPL-2.0
#
# The demo (make run): load every module of ours and show what they did.
. /tests/lib.sh

echo
echo "virtio-msg demo guest: $(uname -r)"
for ko in $MODDIR/*.ko; do
	name=$(basename "$ko" .ko)
	insmod "$ko" && echo "loaded $name"
done
dmesg | grep -E 'virtio_msg|ok [0-9]+ virtio_msg' | tail -20
echo
echo "Modules: $(ls $MODDIR | tr '\n' ' ')"
echo "Power off with: poweroff -f"
