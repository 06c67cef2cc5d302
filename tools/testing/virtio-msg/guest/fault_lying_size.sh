# SPDX-License-Identifier: GPL-2.0
#
# The body of fault_garbage.sh, with entropy device 1's messages claiming a
# msg_size of 200 bytes, more than a slot holds, once it is up: each is
# malformed (never read past the slot), with the same outcome.
# e2e-host: faults
# e2e-emulator-extra: --fault 0:1:lying-size,after=11
# e2e-kasan: message sizes larger than a slot
. /tests/fault_garbage.sh
