#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Provision everything the build and the tests need, idempotently.
#
# Rules (see README "Provisioning"):
#  - never upgrade or remove a host package: every apt install is simulated
#    first and refused if the simulation shows an upgrade ("Inst pkg [old]")
#    or a removal;
#  - extra Debian suites are added with Pin-Priority 100, so nothing is ever
#    taken from them unless asked for by name;
#  - the archive's address is taken from the host's own apt configuration.
#
# Everything cached lives under $VMSG_CACHE (outside the clone).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"

log() { printf 'provision: %s\n' "$*" >&2; }
die() { printf 'provision: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, chroot)"
mkdir -p "$VMSG_CACHE"

# --- apt suites --------------------------------------------------------------
src=/etc/apt/sources.list.d/virtio-msg-extra.sources
pref=/etc/apt/preferences.d/virtio-msg-extra.pref

mirror() {
	apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
		awk '$2 == "bookworm" { print $1; exit }'
}

if [ ! -f "$src" ] || [ ! -f "$pref" ]; then
	uri=$(mirror)
	[ -n "$uri" ] || { apt-get update -q >/dev/null; uri=$(mirror); }
	[ -n "$uri" ] || die "cannot find the Debian archive in the host's apt configuration"
	log "adding $EXTRA_SUITES from $uri with Pin-Priority 100"
	cat >"$pref" <<PREF
# Added by virtio-msg support/provision.sh: never install from these suites
# unless a package is named with its suite.
PREF
	for s in $EXTRA_SUITES; do
		printf '\nPackage: *\nPin: release n=%s\nPin-Priority: 100\n' "$s" >>"$pref"
	done
	cat >"$src" <<SRC
# Added by virtio-msg support/provision.sh (pinned to 100 in $pref)
Types: deb
URIs: $uri
Suites: $EXTRA_SUITES
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	rm -f "$VMSG_CACHE/apt-updated"
fi
if [ ! -f "$VMSG_CACHE/apt-updated" ] || ! apt-cache show "linux-source-$LINUX_SERIES" >/dev/null 2>&1; then
	log "apt-get update"
	apt-get update -q >/dev/null
	touch "$VMSG_CACHE/apt-updated"
fi

# --- safe install --------------------------------------------------------------
# installed PKG[=VER] -> true if that package (and version, if given) is installed
installed() {
	local name=${1%%=*} want=${1#*=} have
	name=${name%%/*}
	have=$(dpkg-query -W -f '${Status} ${Version}' "$name" 2>/dev/null) || return 1
	case "$have" in "install ok installed "*) ;; *) return 1 ;; esac
	[ "$want" = "$1" ] || [ "${have##* }" = "$want" ]
}

# safe_install [apt options] -- PKG...: simulate, refuse upgrades/removals, install
safe_install() {
	local opts=() pkgs=() missing=() p sim
	while [ "$1" != -- ]; do opts+=("$1"); shift; done
	shift
	for p in "$@"; do installed "$p" || missing+=("$p"); done
	[ ${#missing[@]} -gt 0 ] || return 0
	log "installing ${missing[*]}"
	sim=$(apt-get install -s -y --no-install-recommends "${opts[@]}" "${missing[@]}" 2>&1) ||
		die "apt-get simulation failed:\n$sim"
	if grep -qE '^(Remv |Inst [^ ]+ \[)' <<<"$sim"; then
		grep -E '^(Remv |Inst [^ ]+ \[)' <<<"$sim" >&2
		die "installing ${missing[*]} would upgrade or remove host packages (above); refusing"
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		"${opts[@]}" "${missing[@]}" >/dev/null
}

safe_install -- $HOST_PACKAGES $KASAN_PACKAGES
safe_install -t "$BACKPORTS" -- "rust-src=$RUST_SRC_VERSION"

# linux-source: the pinned version if the archive still has it, else the
# newest 7.2 of the same suite (the version used is recorded in the build).
if ! installed "linux-source-$LINUX_SERIES"; then
	versions=$(apt-cache madison "linux-source-$LINUX_SERIES" | awk -F' [|] ' '{ print $2 }')
	if grep -qxF "$LINUX_SOURCE_VERSION" <<<"$versions"; then
		safe_install -t "$BACKPORTS" -- "linux-source-$LINUX_SERIES=$LINUX_SOURCE_VERSION"
	else
		log "warning: linux-source-$LINUX_SERIES $LINUX_SOURCE_VERSION is gone from the archive; using the newest"
		safe_install -t "$BACKPORTS" -- "linux-source-$LINUX_SERIES"
	fi
fi
[ -f "$LINUX_TARBALL" ] || die "$LINUX_TARBALL missing after installing linux-source-$LINUX_SERIES"

# --- QEMU >= 10.1 (vfio-user client) in a trixie chroot --------------------------
# Made in the background (mostly downloads) while bindgen compiles.
qemu_chroot() {
	local uri inc
	uri=$(mirror)
	log "building the QEMU chroot in $QEMU_ROOT (about a minute)"
	rm -rf "$QEMU_ROOT.tmp"
	inc=$(printf '%s/'"$BACKPORTS"',' $QEMU_PACKAGES)
	mmdebstrap --quiet --variant=apt --include="${inc%,}" trixie "$QEMU_ROOT.tmp" \
		"deb $uri trixie main" "deb $uri $BACKPORTS main" >&2
	mv "$QEMU_ROOT.tmp" "$QEMU_ROOT"
}
chroot_pid=
if [ ! -x "$QEMU_ROOT/usr/bin/qemu-system-x86_64" ]; then
	qemu_chroot &
	chroot_pid=$!
fi

# --- bindgen -------------------------------------------------------------------
if [ "$("$BINDGEN" --version 2>/dev/null)" != "bindgen $BINDGEN_VERSION" ]; then
	log "cargo install bindgen-cli $BINDGEN_VERSION (about 3 minutes)"
	LIBCLANG_PATH=$LIBCLANG_PATH cargo install --quiet --locked --root "$VMSG_CACHE/cargo" \
		"bindgen-cli@$BINDGEN_VERSION"
fi

if [ -n "$chroot_pid" ]; then
	wait "$chroot_pid" || die "building the QEMU chroot failed"
fi

log "ready: rustc $(rustc --version | cut -d' ' -f2), $("$BINDGEN" --version)," \
	"$("$here/qemu" --version | head -1)"
