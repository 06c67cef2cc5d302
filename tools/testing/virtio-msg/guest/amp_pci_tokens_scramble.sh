# SPDX-License-Identifier: GPL-2.0
#
# The AMP PCI suite (amp_pci.sh, host side host/amp_pci.sh) against an
# emulator whose responses never carry their request's token (and whose
# events carry arbitrary ones): the drivers must not trust tokens at all.
# e2e-host: amp_pci
# e2e-exclusive: vmsgtap0
# e2e-emulator-extra: --tokens scramble
. /tests/amp_pci.sh
