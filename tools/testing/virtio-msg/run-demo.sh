#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# run-demo.sh: the demo of 'make run'. Starts virtio-msg-emulator with an
# entropy, a block and a console device on FIFO 0 and a network device on
# FIFO 1, and boots the guest with a shell on this terminal; the guest loads
# the modules and shows each device at work (guest/demo.sh).
#
# Host side: the disk image is build/run/disk.img (kept between runs), the
# network device is the TAP interface vmsgtap0 with 10.77.0.1/24 on this
# host (needs root), and the console answers each line with "host echo: ...".
set -euo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
run=$top/build/run
mkdir -p "$run"
[ -f "$run/disk.img" ] || truncate -s 64M "$run/disk.img"
rm -f "$run/console.sock"

# The console peer: connects when the emulator is up, echoes lines back.
python3 -c '
import socket, sys, time
path = sys.argv[1]
for _ in range(600):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        break
    except OSError:
        s.close()
        time.sleep(0.2)
else:
    sys.exit(0)
buf = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        s.sendall(b"host echo: " + line.strip(b"\r") + b"\n")
' "$run/console.sock" >"$run/console.log" 2>&1 &
peer=$!
trap 'kill $peer 2>/dev/null || true' EXIT

"$top/tools/testing/virtio-msg/boot.sh" --emulator "--fifos 2 --device 0:0:rng \
--device 0:1:blk,file=$run/disk.img --device 0:2:console,socket=$run/console.sock \
--device 1:0:net,tap=vmsgtap0,host-ip=10.77.0.1/24"
