#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The overlay as a patch series against the pristine Linux tree the build uses.
#
#   series.sh          write build/series/: git format-patch output and a cover
#                      letter (make series)
#   series.sh check    write it, then prove it (make check, suite "series"):
#                      it applies with git am to the pristine tree and gives
#                      the overlay's tree; scripts/checkpatch.pl --strict
#                      finds nothing but the exceptions the cover letter
#                      lists; what the series touches compiles after every
#                      patch (build_patch, with
#                      kernel/configs/virtio_msg_series.config, as far as its
#                      options exist at that patch: the smallest configuration
#                      that compiles everything the series adds) and the
#                      whole kernel with the full guest configuration
#                      (support/kernel.sh, whose tree the result is, byte for
#                      byte), and with PREEMPT_RT (kernel/configs/
#                      virtio_msg_rt.config on top of the series one: the
#                      kernel crate; the drivers depend on !PREEMPT_RT);
#                      make rustdoc of the result warns about nothing.
#
# What goes into which patch: patches/series. The commits are made in a git
# repository of the pristine tree (build/series-git, a clone of one cached
# outside the clone), author and dates taken from the repository's last
# commit, so the same commit of ours always gives the same series.
# Prints "series: CHECK pass|fail" per check, then "series: N passed, N failed".
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/support/versions.sh"

B=$top/build
OUT=$B/series
WORK=$B/series-git
OBJ=$B/series-obj
PRISTINE=$VMSG_CACHE/linux-source-$LINUX_SERIES
BASE_GIT=$VMSG_CACHE/linux-source-$LINUX_SOURCE_VERSION.git
FRAGMENT=$top/kernel/configs/virtio_msg_series.config
RT_FRAGMENT=$top/kernel/configs/virtio_msg_rt.config
JOBS=${JOBS:-$(nproc)}
export BINDGEN LIBCLANG_PATH RUST_LIB_SRC
export CCACHE_BASEDIR=$top

log() { printf 'series: %s\n' "$*" >&2; }
die() { printf 'series: error: %s\n' "$*" >&2; exit 1; }

git_w() { git -C "$WORK" -c advice.detachedHead=false "$@"; }

author_name=$(git -C "$top" log -1 --format=%an)
author_email=$(git -C "$top" log -1 --format=%ae)
export GIT_AUTHOR_NAME=$author_name GIT_AUTHOR_EMAIL=$author_email
export GIT_COMMITTER_NAME=$author_name GIT_COMMITTER_EMAIL=$author_email
GIT_AUTHOR_DATE=$(git -C "$top" log -1 --format=%cI)
export GIT_AUTHOR_DATE GIT_COMMITTER_DATE=$GIT_AUTHOR_DATE

# The pristine tree as a git repository with one commit, tagged "base"
# (made once, outside the clone: about a minute).
base_repository() {
	[ -d "$BASE_GIT" ] && return
	[ -f "$PRISTINE/Makefile" ] || "$top/support/kernel.sh" tree >/dev/null
	log "making a git repository of Linux $(cat "$PRISTINE/.debian-version")"
	rm -rf "$BASE_GIT.tmp"
	git init -q --bare "$BASE_GIT.tmp"
	# -f: Debian's .gitignore ignores everything at the top level.
	git --git-dir="$BASE_GIT.tmp" --work-tree="$PRISTINE" add -f -A -- . ':!.debian-version'
	git --git-dir="$BASE_GIT.tmp" --work-tree="$PRISTINE" commit -q \
		-m "Linux $(cat "$PRISTINE/.debian-version") (Debian linux-source-$LINUX_SERIES)"
	git --git-dir="$BASE_GIT.tmp" tag base
	mv "$BASE_GIT.tmp" "$BASE_GIT"
}

# A work tree of it to commit in; kept between runs, so that the per-patch
# builds are incremental.
work_tree() {
	base_repository
	if [ ! -d "$WORK/.git" ]; then
		log "checking out $WORK"
		rm -rf "$WORK"
		git clone -q --shared --no-checkout "$BASE_GIT" "$WORK"
		git_w checkout -q -f base
	fi
}

# The lines of patches/series: "PATCH ENTRY..."
steps() { grep -vE '^(#|$)' "$top/patches/series"; }

# entry_files ENTRY: the overlay files a full entry of patches/series adds
entry_files() {
	local e=${1%@*}
	if [ -d "$top/$e" ]; then
		(cd "$top" && git ls-files -- "$e")
	else
		echo "$e"
	fi
}

# Every patch of patches/ and every new file of the overlay is in the
# series once (kernel/configs/ are test configurations, not part of it).
check_manifest() {
	local bad=0 f n
	for f in "$top"/patches/*.patch; do
		n=$(steps | awk -v p="$(basename "$f")" '$1 == p' | wc -l)
		[ "$n" = 1 ] || { log "patches/series names $(basename "$f") $n times"; bad=1; }
	done
	local added
	added=$(steps | tr ' ' '\n' | grep -v '@' | grep -v '\.patch$' | while read -r e; do entry_files "$e"; done)
	while read -r f; do
		n=$(grep -cxF "$f" <<<"$added" || true)
		[ "$n" = 1 ] || { log "patches/series adds $f $n times (want 1)"; bad=1; }
	done < <(cd "$top" && git ls-files -- Documentation drivers include rust)
	[ $bad = 0 ] || die "patches/series does not match the overlay"
}

# Standard input without its trailing blank lines.
trim_blank_tail() { sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'; }

# add_entry ENTRY: copy what ENTRY adds into the work tree
add_entry() {
	local e=$1 f
	case "$e" in
	*@*)
		f=${e%@*}
		mkdir -p "$WORK/$(dirname "$f")"
		awk -v stop="config ${e#*@}" '$0 == stop { exit } { print }' "$top/$f" |
			trim_blank_tail >"$WORK/$f"
		;;
	*)
		entry_files "$e" | while read -r f; do
			mkdir -p "$WORK/$(dirname "$f")"
			cp "$top/$f" "$WORK/$f"
		done
		;;
	esac
}

# The MAINTAINERS entry, with the F: lines of the files that exist now, in
# its place in the alphabetical order of MAINTAINERS.
maintainers() {
	python3 - "$WORK" "$top/patches/MAINTAINERS" <<'EOF'
import glob, os, sys
work, entry_file = sys.argv[1:]
entry = open(entry_file).read().rstrip('\n').split('\n')
title = entry[0]
keep = [l for l in entry if not l.startswith('F:\t')
        or glob.glob(os.path.join(work, l[3:].rstrip('/')))]
if not any(l.startswith('F:\t') for l in keep):
    sys.exit(0)
path = os.path.join(work, 'MAINTAINERS')
lines = open(path).read().split('\n')
# Drop the entry if an earlier patch added it.
if title in lines:
    i = lines.index(title)
    j = lines.index('', i)
    del lines[i:j + 1]
# Entries are sorted, ignoring case.
start = lines.index('Maintainers List')
for i in range(start, len(lines) - 1):
    if lines[i] and lines[i + 1].startswith(('M:\t', 'R:\t', 'L:\t', 'S:\t')) \
            and lines[i].upper() > title.upper():
        lines[i:i] = keep + ['']
        break
open(path, 'w').write('\n'.join(lines))
EOF
}

# The commit message of a patch of patches/: its header, signed off.
message() {
	sed -n '/^--- a\//q; p' "$top/patches/$1" | trim_blank_tail
	printf '\nSigned-off-by: %s <%s>\n' "$author_name" "$author_email"
}

generate() {
	check_manifest
	work_tree
	git_w checkout -q -f -B series base
	git_w clean -q -f -d -x
	local patch entries e
	while read -r patch entries; do
		git_w apply --whitespace=error-all "$top/patches/$patch" ||
			die "patches/$patch does not apply in the order of patches/series"
		for e in $entries; do add_entry "$e"; done
		maintainers
		git_w add -f -A
		message "$patch" | git_w commit -q -F -
	done < <(steps)
	rm -rf "$OUT"
	git_w format-patch -q --cover-letter -o "$OUT" base..series
	cover_letter
	log "$(ls "$OUT" | wc -l) files in $OUT (the cover letter is 0000-cover-letter.patch)"
}

# The cover letter: patches/cover-letter (subject, blank line, body) in
# place of format-patch's blanks.
cover_letter() {
	python3 - "$OUT/0000-cover-letter.patch" "$top/patches/cover-letter" <<'EOF'
import sys
path, src = sys.argv[1:]
subject, _, body = open(src).read().partition('\n\n')
text = open(path).read()
text = text.replace('*** SUBJECT HERE ***', subject.strip())
text = text.replace('*** BLURB HERE ***', body.rstrip('\n'))
open(path, 'w').write(text)
EOF
}

passed=0 failed=0
result() {
	echo "series: $1 $2${3:+ $3}"
	if [ "$2" = pass ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

kmake() {
	make -s -C "$WORK" O="$OBJ" ARCH=x86_64 BINDGEN="$BINDGEN" CC="ccache gcc" -j"$JOBS" "$@"
}

# Warnings the pristine tree gives, not the series: with the guest
# configuration (its KUnit doctests), objtool finds that two of 7.2's own
# doctests of kernel::num::Bounded (a division that may panic) fall through.
upstream_warnings='^rust/doctests_kernel_generated\.o: warning: objtool: _RNvX[A-Za-z0-9_]*6kernel3num7bounded[A-Za-z0-9_]*\(\) falls through to next function '

# build_check NAME LOG COMMAND...: NAME passes if COMMAND succeeds and its
# output (kept in LOG) has no warning and no error (but upstream_warnings).
build_check() {
	local name=$1 log=$2 bad='^(warning|error)|: (warning|error):'
	shift 2
	if "$@" >"$log" 2>&1 && ! grep -vE "$upstream_warnings" "$log" | grep -qE "$bad"; then
		result "$name" pass
	else
		{ grep -E -A6 "$bad" "$log" || tail -n 30 "$log"; } | head -n 40 | sed 's/^/series:   /'
		result "$name" fail
	fi
}

# One patch: configured, and what the series builds on or adds compiled: the
# Rust side (rust/: bindings, helpers, the kernel crate), drivers/virtio/
# (the core, our drivers and their KUnit suites) and every other C file the
# patch changes. Not the rest of vmlinux, linked or not: the patches change
# nothing else, and each whole build cost a cold cache minutes beside the
# guests. The whole kernel is built and linked, modules and all, with the
# last patch (builds_with_the_full_guest_config).
build_patch() {
	local targets=(rust/ drivers/virtio/) f
	for f in $(git_w diff --name-only HEAD^ HEAD -- '*.c'); do
		case $f in rust/* | drivers/virtio/*) ;; *) targets+=("${f%.c}.o") ;; esac
	done
	configure && kmake "${targets[@]}"
}

# The series configuration, as far as its symbols exist in this commit.
configure() {
	mkdir -p "$OBJ"
	kmake tinyconfig >/dev/null &&
		"$WORK/scripts/kconfig/merge_config.sh" -m -O "$OBJ" "$OBJ/.config" "$FRAGMENT" >/dev/null &&
		kmake olddefconfig >/dev/null
}

# The last commit with PREEMPT_RT too, in a tree of its own: the drivers
# depend on !PREEMPT_RT, the kernel crate's additions must build, and the C
# they stand on (the counted interrupt disabling of patch 0004, its Rust
# helpers). Only those objects: a whole vmlinux of its own configuration took
# minutes of a cold cache beside the KASAN guests.
build_rt() {
	local OBJ=$B/series-rt-obj
	mkdir -p "$OBJ"
	kmake tinyconfig >/dev/null &&
		"$WORK/scripts/kconfig/merge_config.sh" -m -O "$OBJ" "$OBJ/.config" \
			"$FRAGMENT" "$RT_FRAGMENT" >/dev/null &&
		kmake olddefconfig >/dev/null &&
		grep -qx 'CONFIG_PREEMPT_RT=y' "$OBJ/.config" &&
		grep -qx 'CONFIG_RUST=y' "$OBJ/.config" &&
		grep -qx 'CONFIG_VIRTIO=y' "$OBJ/.config" &&
		kmake prepare rust/kernel.o rust/helpers/helpers.o kernel/softirq.o
}

# Exceptions: the cover letter's lines "  NNNN TYPE: reason".
exceptions() { sed -nE 's/^ +([0-9]{4}) ([A-Z_]+): .*/\1 \2/p' "$top/patches/cover-letter"; }

check_apply() {
	git_w checkout -q -f -B am base
	if ls "$OUT"/*.patch | grep -v '/0000-cover-letter' | xargs git -C "$WORK" am -q 2>"$B/series-am.log"; then
		result applies pass
	else
		result applies fail "($(head -n 3 "$B/series-am.log" | tr '\n' ' '))"
		git_w am --abort 2>/dev/null || true
		return 1
	fi
	# The result is the tree the overlay builds: every file the series
	# touches, as kernel.sh lays it.
	"$top/support/kernel.sh" tree
	local f bad=0
	while read -r f; do
		[ "$f" = MAINTAINERS ] && continue
		cmp -s "$WORK/$f" "$B/src/$f" || { log "$f differs from the overlay's"; bad=1; }
	done < <(git_w diff --name-only base am)
	if [ $bad = 0 ]; then result same_tree_as_overlay pass; else result same_tree_as_overlay fail; fi
}

check_checkpatch() {
	local p n t bad allowed report
	allowed=$(exceptions)
	for p in "$OUT"/0*.patch; do
		n=$(basename "$p" | cut -c1-4)
		[ "$n" = 0000 ] && continue
		# The system python: spdxcheck.py needs python3-ply and python3-git.
		report=$(cd "$WORK" && PATH=/usr/bin:$PATH scripts/checkpatch.pl --strict --show-types "$p" 2>&1) || true
		bad=""
		for t in $(sed -nE 's/^(ERROR|WARNING|CHECK):([A-Z_]+):.*/\2/p' <<<"$report" | sort -u); do
			grep -qx "$n $t" <<<"$allowed" || bad="$bad $t"
		done
		if [ -n "$bad" ] || grep -q '^Traceback' <<<"$report"; then
			sed 's/^/series:   /' <<<"$report"
			result "checkpatch_$n" fail "(not listed in the cover letter:${bad:- none, but checkpatch failed})"
		else
			result "checkpatch_$n" pass
		fi
	done
}

check_builds() {
	local commits c i=0 n subject
	mapfile -t commits < <(git_w rev-list --reverse base..am)
	n=${#commits[@]}
	for c in "${commits[@]}"; do
		i=$((i + 1))
		subject=$(git_w log -1 --format=%s "$c")
		git_w checkout -q -f "$c"
		log "building patch $i/$n: $subject"
		build_check "$(printf 'builds_after_%04d' "$i")" "$B/series-build-$i.log" build_patch
	done
	# The last step has every symbol of the series configuration.
	local missing
	missing=$(grep -E '^CONFIG_[A-Z0-9_]+=' "$FRAGMENT" | grep -vxFf "$OBJ/.config" || true)
	if [ -z "$missing" ]; then
		result series_config_complete_at_the_end pass
	else
		result series_config_complete_at_the_end fail "($(tr '\n' ' ' <<<"$missing"))"
	fi
	# The result with the full guest configuration: build/src is the tree the series
	# gives (same_tree_as_overlay), and kernel.sh checks every option of the guest
	# fragment; after "make" (the build suite of make check) this is a no-op.
	build_check builds_with_the_full_guest_config "$B/series-build-full.log" \
		"$top/support/kernel.sh" build
	build_check kernel_crate_builds_with_preempt_rt "$B/series-build-rt.log" build_rt
	build_check rustdoc_without_warnings "$B/series-rustdoc.log" kmake rustdoc
}

case "${1:-write}" in
write) generate ;;
check)
	generate
	if check_apply; then
		check_checkpatch
		check_builds
	fi
	echo "series: $passed passed, $failed failed"
	[ $failed = 0 ]
	;;
*) die "unknown command $1 (write or check)" ;;
esac
