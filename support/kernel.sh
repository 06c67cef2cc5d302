#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Lay the overlay onto a pristine Linux tree, configure it and build it.
#
#   kernel.sh tree     build/src: pristine copy + overlay + patches/
#   kernel.sh config   build/obj/.config from tinyconfig + our fragment
#   kernel.sh build    bzImage and modules, copied to build/out/
#   kernel.sh make ... any kernel make target, in build/obj
#
# VMSG_VARIANT=kasan builds the KASAN variant instead (build/obj-kasan,
# build/out-kasan; kernel/configs/virtio_msg_kasan.config on top of the guest
# fragment), with clang (LLVM=$KASAN_LLVM): Rust and KASAN need it;
# VMSG_VARIANT=bench the benchmark variant (build/obj-bench, build/out-bench;
# virtio_msg_bench.config: no lockdep, atomic-sleep checks or kmemleak). Both
# share build/src.
#
# build/src is a hard-linked copy of the pristine tree (cheap to recreate).
# It is recreated only when the set of overlay files or a patch changes;
# otherwise the overlay is rsync'ed onto it, which only touches the files
# that changed, so a rebuild after editing one file is incremental.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/support/versions.sh"

B=$top/build
SRC=$B/src
PRISTINE=$VMSG_CACHE/linux-source-$LINUX_SERIES
FRAGMENTS=virtio_msg_guest.config
case "${VMSG_VARIANT:-}" in
"")
	OBJ=$B/obj OUT=$B/out
	TOOLCHAIN=(CC="ccache gcc")
	;;
kasan)
	OBJ=$B/obj-kasan OUT=$B/out-kasan
	FRAGMENTS+=" virtio_msg_kasan.config"
	TOOLCHAIN=(LLVM="$KASAN_LLVM" CC="ccache clang$KASAN_LLVM")
	;;
bench)
	OBJ=$B/obj-bench OUT=$B/out-bench
	FRAGMENTS+=" virtio_msg_bench.config"
	TOOLCHAIN=(CC="ccache gcc")
	;;
*) echo "kernel: error: unknown VMSG_VARIANT '$VMSG_VARIANT'" >&2; exit 1 ;;
esac
# Top-level directories of the repository that are laid onto the kernel tree.
OVERLAY_DIRS="Documentation drivers include kernel rust"

JOBS=${JOBS:-$(nproc)}
export BINDGEN LIBCLANG_PATH RUST_LIB_SRC
export CCACHE_BASEDIR=$top

log() { printf 'kernel: %s\n' "$*" >&2; }
die() { printf 'kernel: error: %s\n' "$*" >&2; exit 1; }

kmake() { make -s -C "$SRC" O="$OBJ" ARCH=x86_64 BINDGEN="$BINDGEN" "${TOOLCHAIN[@]}" -j"$JOBS" "$@"; }

overlay_files() {
	(cd "$top" && for d in $OVERLAY_DIRS; do if [ -d "$d" ]; then find "$d" -type f; fi; done) | LC_ALL=C sort
}

pristine() {
	[ -f "$PRISTINE/Makefile" ] && return
	[ -f "$LINUX_TARBALL" ] || die "$LINUX_TARBALL missing: run 'make provision'"
	log "unpacking $LINUX_TARBALL"
	rm -rf "$PRISTINE.tmp"
	mkdir -p "$PRISTINE.tmp"
	tar -xf "$LINUX_TARBALL" -C "$PRISTINE.tmp" --strip-components=1
	dpkg-query -W -f '${Version}\n' "linux-source-$LINUX_SERIES" >"$PRISTINE.tmp/.debian-version"
	mv "$PRISTINE.tmp" "$PRISTINE"
}

cmd_tree() {
	pristine
	local stamp
	stamp=$( { overlay_files; cat "$top"/patches/*.patch; cat "$PRISTINE/.debian-version"; } | sha256sum | cut -c1-16)
	if [ "$(cat "$B/src.stamp" 2>/dev/null)" != "$stamp" ]; then
		log "laying the overlay onto a fresh copy of Linux $(cat "$PRISTINE/.debian-version")"
		rm -rf "$SRC" "$B/src.stamp"
		mkdir -p "$B"
		cp -al "$PRISTINE" "$SRC" 2>/dev/null || cp -a "$PRISTINE" "$SRC"
		local p f
		for p in "$top"/patches/*.patch; do
			# Break the hard links of the files a patch touches, so the
			# pristine copy is never modified (a file an earlier patch
			# touched is already a copy of its own: kept as patched).
			for f in $(sed -n 's,^+++ b/,,p' "$p"); do
				if [ "$(stat -c %h "$SRC/$f" 2>/dev/null)" != 1 ]; then
					cp --remove-destination "$PRISTINE/$f" "$SRC/$f" 2>/dev/null || true
				fi
			done
			patch -s -p1 -d "$SRC" --no-backup-if-mismatch <"$p" ||
				die "patch $(basename "$p") does not apply"
			# Same mtime on every recreation: no spurious rebuilds.
			for f in $(sed -n 's,^+++ b/,,p' "$p"); do touch -r "$p" "$SRC/$f"; done
		done
		# A file whose patched content changed since the last tree (a patch
		# added, edited or removed) gets the current time: its mtime alone
		# (the patch's, or the pristine file's when no patch touches it any
		# more) may be older than the objects built from the old content.
		# $B/src.patched records each patched file's content hash.
		local was=() now
		[ -f "$B/src.patched" ] && mapfile -t was < <(cut -d' ' -f3 "$B/src.patched")
		now=$(cat "$top"/patches/*.patch | sed -n 's,^+++ b/,,p')
		: >"$B/src.patched.new"
		for f in $(printf '%s\n' "${was[@]}" $now | sort -u); do
			[ -f "$SRC/$f" ] || continue
			if grep -qxF "$f" <<<"$now"; then
				(cd "$SRC" && sha256sum "$f") >>"$B/src.patched.new"
			fi
			if ! grep -qxF "$(cd "$SRC" && sha256sum "$f")" "$B/src.patched" 2>/dev/null; then
				[ "$(stat -c %h "$SRC/$f")" = 1 ] || cp --remove-destination "$PRISTINE/$f" "$SRC/$f"
				touch "$SRC/$f"
			fi
		done
		mv "$B/src.patched.new" "$B/src.patched"
	fi
	# rsync replaces files (never writes through the hard links). Changed files
	# are found by content and get the current time, not the source's: a file
	# edited while a build was running must still look newer than its objects.
	(cd "$top" && rsync -rlp --checksum --files-from=<(overlay_files) ./ "$SRC/")
	echo "$stamp" >"$B/src.stamp"
}

# Every option of the fragments must have the value they ask for (a later
# fragment's value for an option replaces an earlier one's).
check_config() {
	local bad=0 line sym f
	local -A want=()
	for f in $FRAGMENTS; do
		while read -r line; do
			case "$line" in
			CONFIG_*=*) sym=${line%%=*} ;;
			"# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *} ;;
			*) continue ;;
			esac
			want[$sym]=$line
		done <"$top/kernel/configs/$f"
	done
	for sym in "${!want[@]}"; do
		line=${want[$sym]}
		# An option that is off may also be absent (its dependencies are).
		if ! grep -qxF "$line" "$OBJ/.config" &&
			! { [ "$line" = "# $sym is not set" ] && ! grep -q "^$sym=" "$OBJ/.config"; }; then
			log "config: wanted '$line', got '$(grep -E "^$sym=|^# $sym is not set" "$OBJ/.config" || echo unset)'"
			bad=1
		fi
	done
	[ $bad = 0 ] || die "the configuration does not match kernel/configs/{${FRAGMENTS// /,}} (missing dependency?)"
}

cmd_config() {
	cmd_tree
	local stamp
	stamp=$(cd "$top/kernel/configs" && cat "$B/src.stamp" $FRAGMENTS | sha256sum | cut -c1-16)
	if [ ! -f "$OBJ/.config" ] || [ "$(cat "$OBJ.stamp" 2>/dev/null)" != "$stamp" ]; then
		log "configuring $OBJ (tinyconfig + $FRAGMENTS)"
		mkdir -p "$OBJ"
		kmake rustavailable >/dev/null || die "the Rust toolchain is not usable: run 'make provision'"
		kmake tinyconfig $FRAGMENTS >/dev/null
		check_config
		echo "$stamp" >"$OBJ.stamp"
	fi
}

# install FILE DIR: copy FILE into DIR unless it is there already, by rename:
# a guest booting from DIR meanwhile reads the old file or the new, whole.
install_file() {
	cmp -s "$1" "$2/$(basename "$1")" && return
	cp "$1" "$2/.$(basename "$1").tmp"
	mv "$2/.$(basename "$1").tmp" "$2/$(basename "$1")"
}

cmd_build() {
	cmd_config
	log "building bzImage and modules (-j$JOBS)"
	kmake bzImage modules
	mkdir -p "$OUT/modules"
	install_file "$OBJ/arch/x86/boot/bzImage" "$OUT"
	local m ko want=" "
	while read -r m; do
		[ -f "$OBJ/$m.ko" ] || continue
		install_file "$OBJ/$m.ko" "$OUT/modules"
		want+="$(basename "$m").ko "
	done < <(overlay_files | sed -n 's,\.rs$,,p; s,\.c$,,p')
	for ko in "$OUT"/modules/*.ko; do
		case $want in *" $(basename "$ko") "*) ;; *) rm -f "$ko" ;; esac
	done
	echo "Linux $(cat "$PRISTINE/.debian-version") (linux-source-$LINUX_SERIES)" >"$OUT/linux-version"
	log "$OUT/bzImage, $(ls "$OUT/modules" | wc -l) modules in $OUT/modules"
}

cmd="${1:-build}"
shift || true
# One kernel.sh at a time per build tree ("make check" builds in two lanes):
# two makes in one O= directory, or an overlay laid while a build reads it,
# break each other.
mkdir -p "$B"
exec 8>"$OBJ.lock"
flock 8
case "$cmd" in
tree) cmd_tree ;;
config) cmd_config ;;
build) cmd_build ;;
make) cmd_config; kmake "$@" ;;
*) die "unknown command $cmd" ;;
esac
