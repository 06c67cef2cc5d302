# SPDX-License-Identifier: GPL-2.0
#
# The AMP PCI suite (amp_pci.sh, host side host/amp_pci.sh) against an
# emulator that sends token 0 in every message: the drivers must match
# replies without tokens.
# e2e-host: amp_pci
# e2e-exclusive: vmsgtap0
# e2e-emulator-extra: --tokens zero
. /tests/amp_pci.sh
