#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""What the devices of the device-kind fault tests talk to on this host.

  peers.py console SOCKET OUT   connect to the emulator's console socket
                                (retrying until it exists, and again when a
                                connection ends) and append every byte the
                                guest writes to OUT; connections are logged
  peers.py echo PORT            TCP echo server (any number of connections):
                                traffic both ways for as long as a guest sends
  peers.py digest PORT          TCP server: reads a decimal length and a
                                newline, then that many bytes, and answers
                                their SHA-256 (hex)

Each runs until killed (or 600 s).
"""
import hashlib
import socket
import sys
import threading
import time

DEADLINE = time.time() + 600


def log(what):
    print(f"{time.strftime('%H:%M:%S')} peers.py {what}", file=sys.stderr, flush=True)


def console(path, out):
    """Appends what the emulator's console sends to OUT; connects again whenever a
    connection ends (the emulator drops a client it cannot write to)."""
    with open(out, "ab", buffering=0) as f:
        while time.time() < DEADLINE:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
            except OSError:
                s.close()
                time.sleep(0.2)
                continue
            log(f"console: connected to {path}")
            received = 0
            try:
                while chunk := s.recv(65536):
                    f.write(chunk)
                    received += len(chunk)
            except OSError as e:
                log(f"console: {e}")
            log(f"console: connection ended after {received} bytes")
            s.close()
            time.sleep(0.2)


def serve(port, handle):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(8)
    srv.settimeout(max(1, DEADLINE - time.time()))
    while time.time() < DEADLINE:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        conn.settimeout(60)
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def echo(conn):
    try:
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            conn.sendall(chunk)
    except OSError:
        pass
    conn.close()


def digest(conn):
    try:
        head = b""
        while b"\n" not in head:
            chunk = conn.recv(1)
            if not chunk:
                return
            head += chunk
        rest, h = int(head), hashlib.sha256()
        while rest > 0:
            chunk = conn.recv(min(65536, rest))
            if not chunk:
                return
            h.update(chunk)
            rest -= len(chunk)
        conn.sendall(h.hexdigest().encode() + b"\n")
    except (OSError, ValueError):
        pass
    finally:
        conn.close()


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "console":
        console(sys.argv[2], sys.argv[3])
    elif what == "echo":
        serve(int(sys.argv[2]), echo)
    elif what == "digest":
        serve(int(sys.argv[2]), digest)
    else:
        sys.exit("peers.py: unknown peer " + what)
