#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Where a TCG guest's CPU time goes: a sampling profiler through QEMU's gdbstub.

Rust code in the kernel has no ftrace entry, nor have the C helpers behind its MMIO
accessors, so the function profiler cannot split the driver's time between its own code and
the device's accesses. Sampling can: every PERIOD, stop the guest, read each vCPU's
instruction pointer, let it go on. Under TCG the guest's time is host time spent in the code
QEMU runs for it, so the share of samples in a function is the share of the vCPUs' time.

    sampling.py sample PORT RESULTS OUT [COUNT_CTL]

connects to QEMU's gdbstub (-gdb tcp:127.0.0.1:PORT), follows the guest's result lines in
RESULTS, and samples only between "bench: sample start FIGURE TRANSPORT ..." and
"bench: sample stop ..." (guest/bench.sh), writing "FIGURE/TRANSPORT RIP" lines to OUT. It
ends when QEMU does. support/bench.py turns them into time per I/O (report()).

With COUNT_CTL, the control pipe of the instruction counter (support/insncount.c, a TCG
plugin in the same QEMU), the same runs are counted too: "start FIGURE/TRANSPORT" and
"stop FIGURE/TRANSPORT" go to the pipe as the lines come (report_counts() reads what the
plugin wrote). Counting costs the guest one callback per block of kernel code run, which
slows it, not what it counts.
"""
import bisect
import os
import re
import socket
import sys
import time

PERIOD = 0.002


class Stub:
    """Just enough of the GDB remote protocol: packets, no acknowledgements."""

    def __init__(self, port):
        for _ in range(600):
            try:
                self.sock = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise OSError("no gdbstub on port %d" % port)
        # Many small request/answer pairs: without this, each waits for a delayed ACK.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.acks = True
        if self.ask("QStartNoAckMode") == "OK":
            self.acks = False

    def _byte(self):
        while not self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buf = data
        c, self.buf = self.buf[:1], self.buf[1:]
        return c

    def send(self, text):
        data = text.encode()
        self.sock.sendall(b"$%s#%02x" % (data, sum(data) & 0xFF))
        while self.acks and self._byte() != b"+":
            pass

    def receive(self):
        while self._byte() != b"$":
            pass
        data = b""
        while (c := self._byte()) != b"#":
            data += c
        self._byte()
        self._byte()
        if self.acks:
            self.sock.sendall(b"+")
        return data.decode()

    def ask(self, text):
        self.send(text)
        return self.receive()

    def threads(self):
        found, answer = [], self.ask("qfThreadInfo")
        while answer.startswith("m"):
            found += answer[1:].split(",")
            answer = self.ask("qsThreadInfo")
        return found

    def stop(self):
        self.sock.sendall(b"\x03")
        self.receive()

    def rip(self, thread):
        self.ask("Hg" + thread)
        # Register 16 of x86-64 is rip, little-endian hex.
        return int.from_bytes(bytes.fromhex(self.ask("p10")), "little")


def tell(ctl, line):
    """A line to the instruction counter's control pipe (bench.sh loads the plugin whenever it
    samples). Should the plugin not have opened it yet, the run is only sampled, and
    sampling.log says so."""
    if not ctl:
        return
    # The plugin opens the pipe as QEMU starts, on a thread of its own: try for a moment.
    for _ in range(50):
        try:
            fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as e:
            error = e
            time.sleep(0.01)
    else:
        print("count: %s: %s" % (ctl, error), file=sys.stderr)
        return
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def sample(port, results, out, ctl=None):
    stub = Stub(port)
    stub.ask("?")
    threads = stub.threads()
    stub.send("c")
    phase, offset, pending = None, 0, ""
    taken = 0
    with open(out, "w") as f:
        try:
            while True:
                try:
                    with open(results, errors="replace") as r:
                        r.seek(offset)
                        pending += r.read()
                        offset = r.tell()
                except FileNotFoundError:
                    pass
                *lines, pending = pending.split("\n")
                for line in lines:
                    words = line.split()
                    if words[:3] == ["bench:", "sample", "start"] and len(words) >= 5:
                        phase = words[3] + "/" + words[4]
                        tell(ctl, "start " + phase)
                    elif words[:3] == ["bench:", "sample", "stop"] and phase:
                        tell(ctl, "stop " + phase)
                        phase = None
                if phase is None:
                    time.sleep(0.05)
                    continue
                time.sleep(PERIOD)
                stub.stop()
                for t in threads:
                    f.write("%s %x\n" % (phase, stub.rip(t)))
                    taken += 1
                stub.send("c")
        except (EOFError, OSError):
            pass
    print("profile: %d samples" % taken, file=sys.stderr)


# Where a sample lands. The MMIO accessors are the device's time (under TCG each access is
# QEMU's: a vfio-user round trip for the doorbell). The driver is the transport's own code:
# for virtio-msg our modules and the kernel crate's Rust (no other Rust runs in the
# benchmark guest) with its C helpers; for virtio-pci its vp_* functions (our modules'
# timers, running meanwhile, count as the rest there). The virtio core is the same for both.
IDLE = r"idle|halt|mwait"
MMIO = r"^(rust_helper_)?(__)?(io)?(read|write)([bwlq]|8|16|32|64)(be)?(_relaxed)?$"
OURS = r"\[virtio_msg|^_R|^rust_helper_"
PCI = r"^vp_|^virtio_pci"
CORE = r"^vring_|^virtqueue_|^virtio_|^__virtqueue|^detach_buf|^virtblk|^random_recv|^virtio_read"


def category(name, transport):
    if re.search(IDLE, name):
        return "idle"
    if re.search(MMIO, name):
        return "device"
    if re.search(PCI if transport == "pci" else OURS, name):
        return "driver"
    if re.search(CORE, name):
        return "virtio core"
    return "rest"


def readable(name):
    """A Rust v0 symbol's identifiers, joined (enough to tell functions apart)."""
    if not name.startswith("_R"):
        return name
    sym, _, module = name.partition(" [")
    out, i = [], 0
    while i < len(sym):
        # A disambiguator ("s", base 62, "_": "Cs1EKtwoKEMO2_6kernel", "Ms0_") names nothing.
        if sym[i] == "s" and sym[i - 1] in "CMXY":
            i = sym.find("_", i) + 1 or len(sym)
            continue
        m = re.match(r"(\d+)_?", sym[i:])
        if m and not sym[i - 1].isdigit():
            n, start = int(m.group(1)), i + len(m.group(0))
            ident = sym[start:start + n]
            if n > 1 and len(ident) == n and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ident):
                out.append(ident)
                i = start + n
                continue
        i += 1
    return "::".join(out[-4:]) + (" [" + module if module else "")


class Symbols:
    def __init__(self, system_map, module_syms):
        syms = []
        with open(system_map) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] in "tTwW":
                    syms.append((int(parts[0], 16), parts[2]))
        syms += module_syms
        syms.sort()
        self.addrs = [a for a, _ in syms]
        self.names = [n for _, n in syms]

    def name(self, addr):
        if addr < 0xFFFF800000000000:
            return "(user)"
        i = bisect.bisect_right(self.addrs, addr) - 1
        return self.names[i] if i >= 0 else "?"


class Tables:
    """The symbol table each phase's addresses are named with: System.map and the module
    symbols the guest printed first after the phase ended."""

    def __init__(self, system_map, ksym_sets):
        self.system_map, self.ksym_sets, self.maps = system_map, ksym_sets, {}

    def of(self, meta):
        syms = next((s for after, s in self.ksym_sets if after >= meta["index"]), [])
        if id(syms) not in self.maps:
            self.maps[id(syms)] = Symbols(self.system_map, syms)
        return self.maps[id(syms)]


def per_io(phase, weights, table, scale):
    """The categories and the driver's costliest functions of one phase: weights is
    [(address, weight)], scale turns a weight into the figure per I/O."""
    cats, funcs = {}, {}
    transport = phase.partition("/")[2]
    for addr, weight in weights:
        name = table.name(addr)
        cat = category(name, transport)
        cats[cat] = cats.get(cat, 0) + weight
        if cat == "driver":
            funcs[name] = funcs.get(name, 0) + weight
    return ({c: n * scale for c, n in cats.items()},
            [(readable(n), c * scale) for n, c in sorted(funcs.items(), key=lambda kv: -kv[1])[:6]])


def report(samples_path, system_map, ksym_sets, phases):
    """Per phase ("FIGURE/TRANSPORT"): the us per I/O of each category and the driver's top
    functions. ksym_sets: list of (first phase index after which it was printed, [(addr, name)]);
    phases: {phase: {"secs", "cpus", "ops", "index"}}."""
    per_phase = {}
    if not os.path.exists(system_map):
        return {}
    try:
        with open(samples_path) as f:
            for line in f:
                phase, rip = line.split()
                per_phase.setdefault(phase, []).append(int(rip, 16))
    except FileNotFoundError:
        return {}
    tables, out = Tables(system_map, ksym_sets), {}
    for phase, rips in per_phase.items():
        meta = phases.get(phase)
        if not meta or not meta.get("ops"):
            continue
        scale = meta["cpus"] * meta["secs"] * 1e6 / meta["ops"] / len(rips)
        us, top = per_io(phase, [(rip, 1) for rip in rips], tables.of(meta), scale)
        out[phase] = {"samples": len(rips), "us_per_io": us, "driver_top": top}
    return out


def report_counts(counts_path, system_map, ksym_sets, phases):
    """What the instruction counter wrote (support/insncount.c: "PHASE ADDRESS INSTRUCTIONS"
    per block of kernel code, then "PHASE end"), per phase: the kernel's instructions per I/O
    of each category and the driver's top functions, as report() for time."""
    blocks, ended = {}, set()
    if not os.path.exists(system_map):
        return {}
    try:
        with open(counts_path) as f:
            for line in f:
                words = line.split()
                if len(words) == 2 and words[1] == "end":
                    ended.add(words[0])
                elif len(words) == 3:
                    blocks.setdefault(words[0], []).append((int(words[1], 16), int(words[2])))
    except FileNotFoundError:
        return {}
    tables, out = Tables(system_map, ksym_sets), {}
    for phase in ended:
        meta = phases.get(phase)
        if not meta or not meta.get("ops"):
            continue
        insns, top = per_io(phase, blocks.get(phase, []), tables.of(meta), 1 / meta["ops"])
        out[phase] = {"insns_per_io": insns, "driver_top": top}
    return out


if __name__ == "__main__":
    if len(sys.argv) in (5, 6) and sys.argv[1] == "sample":
        sample(int(sys.argv[2]), sys.argv[3], sys.argv[4], *sys.argv[5:])
    else:
        sys.exit(__doc__)
