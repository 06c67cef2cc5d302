#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Host side of guest/amp_pci.sh (see e2e.sh):
#
#   amp_pci.sh setup DIR          create the disk image, start the console
#                                 peer and the network sink, print the
#                                 emulator's arguments
#   amp_pci.sh verify DIR RESULTS check the other ends against the guest's
#                                 "e2e-data:" lines in RESULTS, print
#                                 "e2e-result:" lines, stop the helpers
#
# Needs root (the emulator creates the TAP interface vmsgtap0, 10.77.0.1/24).
set -uo pipefail

TAP=vmsgtap0
HOST_IP=10.77.0.1
NET_PORT=5577
NET_BYTES=$((16 * 65536))

cmd=$1 dir=$2

setup() {
	rm -f "$dir"/disk.img "$dir"/console.* "$dir"/net.* "$dir"/pids
	truncate -s 16M "$dir/disk.img"
	# Console peer: answers the guest's line with "host-got:LINE" and keeps
	# the connection open (output is dropped while no client is connected).
	python3 -c '
import socket, sys, time
path, got = sys.argv[1], sys.argv[2]
deadline = time.time() + 300
while True:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        break
    except OSError:
        s.close()
        if time.time() > deadline:
            sys.exit(1)
        time.sleep(0.2)
buf = b""
while b"\n" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        sys.exit(1)
    buf += chunk
line = buf.split(b"\n")[0].strip(b"\r").decode(errors="replace")
open(got, "w").write(line + "\n")
s.sendall(("host-got:" + line + "\n").encode())
time.sleep(600)
' "$dir/console.sock" "$dir/console.got" >"$dir/console.log" 2>&1 &
	echo $! >>"$dir/pids"
	# Network sink: receives the guest's bulk payload, records and returns
	# its SHA-256.
	python3 -c '
import hashlib, socket, sys
port, size, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port))
srv.listen(1)
srv.settimeout(600)
conn, _ = srv.accept()
conn.settimeout(120)
h, n = hashlib.sha256(), 0
while n < size:
    chunk = conn.recv(min(65536, size - n))
    if not chunk:
        break
    h.update(chunk)
    n += len(chunk)
digest = h.hexdigest() if n == size else "short-%d" % n
open(out, "w").write(digest + "\n")
conn.sendall(digest.encode())
conn.close()
' $NET_PORT $NET_BYTES "$dir/net.sha256" >"$dir/net.log" 2>&1 &
	echo $! >>"$dir/pids"
	echo "--fifos 2 --device 0:0:rng --device 0:1:blk,file=$dir/disk.img" \
		"--device 0:2:console,socket=$dir/console.sock" \
		"--device 1:3:net,tap=$TAP,host-ip=$HOST_IP/24 --device 1:5:rng"
}

result() { echo "e2e-result: $1 $2${3:+ $3}"; }

# fact NAME: the value(s) the guest reported for NAME
fact() { tr -d '\r' <"$results" | sed -n "s/^e2e-data: $1 //p" | tail -n1; }

verify() {
	results=$3
	read -r sum offset length <<<"$(fact blk_sha256)"
	if [ -n "${sum:-}" ] &&
		[ "$(dd if="$dir/disk.img" bs=4096 skip=$((offset / 4096)) count=$((length / 4096)) 2>/dev/null |
			sha256sum | cut -d' ' -f1)" = "$sum" ]; then
		result host_blk_image_matches pass
	else
		result host_blk_image_matches fail "(image region differs from the guest's pattern)"
	fi
	sum=$(fact net_sha256)
	if [ -n "$sum" ] && [ "$(cat "$dir/net.sha256" 2>/dev/null)" = "$sum" ]; then
		result host_net_bulk_sha256 pass
	else
		result host_net_bulk_sha256 fail "(received $(cat "$dir/net.sha256" 2>/dev/null || echo nothing))"
	fi
	token=$(fact console_token)
	if [ -n "$token" ] && [ "$(cat "$dir/console.got" 2>/dev/null)" = "$token" ]; then
		result host_console_line_arrived pass
	else
		result host_console_line_arrived fail "(got '$(cat "$dir/console.got" 2>/dev/null)')"
	fi
	[ -f "$dir/pids" ] && kill $(cat "$dir/pids") 2>/dev/null
	wait 2>/dev/null
	return 0
}

case $cmd in
setup) setup ;;
verify) verify "$@" ;;
*) echo "usage: $0 setup|verify DIR [RESULTS]" >&2; exit 2 ;;
esac
