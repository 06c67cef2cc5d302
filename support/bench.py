#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The host side of "make bench" (support/bench.sh).

  bench.py peer SINK_PORT SOURCE_PORT ADDR...
      the guest's network peer: on every ADDR (retried until it exists), a
      sink on SINK_PORT (reads until the guest shuts its side down, then
      answers with the byte count, in decimal) and a source on SOURCE_PORT
      (sends until the guest closes)
  bench.py report RESULTS DIR
      reads the guest's "bench: ..." lines from RESULTS, prints the table,
      writes DIR/results.json and DIR/results.svg
"""

import datetime
import json
import os
import socket
import subprocess
import statistics
import sys
import threading
import time

import sampling  # support/sampling.py, beside this file


# --- the network peer -------------------------------------------------------

def sink(conn):
    n = 0
    buf = bytearray(1 << 18)
    with conn:
        while True:
            got = conn.recv_into(buf)
            if not got:
                break
            n += got
        conn.sendall(str(n).encode())


def source(conn):
    data = bytes(1 << 16)
    with conn:
        try:
            while True:
                conn.sendall(data)
        except OSError:
            pass


def serve(addr, port, handler):
    while True:
        try:
            srv = socket.socket()
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind((addr, port))
            break
        except OSError:
            srv.close()
            time.sleep(0.2)  # the emulator has not made its TAP yet
    srv.listen(4)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def peer(args):
    sink_port, source_port = int(args[0]), int(args[1])
    threads = []
    for addr in args[2:]:
        for port, handler in ((sink_port, sink), (source_port, source)):
            t = threading.Thread(target=serve, args=(addr, port, handler), daemon=True)
            t.start()
            threads.append(t)
    for t in threads:
        t.join()


# --- the report -------------------------------------------------------------

# Figures in the order shown: (key, what, unit of the rate).
FIGURES = [
    ("blk-qd1", "blk 4 KiB random direct reads, QD1", "IOPS"),
    ("blk-qd16", "blk 4 KiB random direct reads, QD16", "IOPS"),
    ("net-tx", "net TCP stream guest -> host", "MB/s"),
    ("net-rx", "net TCP stream host -> guest", "MB/s"),
    ("rng", "rng 64-byte reads of /dev/hwrng", "reads/s"),
]
TRANSPORTS = ["msg", "pci", "null_blk", "brd", "loopback"]
LABEL = {
    "msg": "virtio-msg",
    "pci": "virtio-pci",
    "null_blk": "null_blk",
    "brd": "brd",
    "loopback": "virtio-msg loopback",
}
TYPES = ["rng", "blk", "net", "console"]
# What issue 10 measured on QEMU's own virtio-msg-amp-pci device model.
ISSUE10_PROBE = {"rng": 10, "blk": 22, "net": 20, "console": 137}
EVENTS = {"EVENT_AVAIL", "EVENT_USED", "EVENT_CONFIG"}
USER_HZ = 100  # /proc/stat ticks per second
NOT_MEASURED = [
    "doorbells and messages of virtio-pci: its notifications are MMIO writes "
    "that the guest does not count.",
]


def parse(path):
    probe, idle, runs, notes, costs, access = {}, {}, [], [], [], {}
    done = False
    with open(path, errors="replace") as f:
        for raw in f:
            line = raw.strip().replace("\r", "")
            if not line.startswith("bench: "):
                continue
            words = line.split()[1:]
            kind = words[0]
            if kind == "probe" and len(words) == 5:
                probe.setdefault(words[1], {})[words[2]] = {
                    "sent": int(words[3]), "received": int(words[4])}
            elif kind == "idle" and len(words) == 4:
                idle[words[1]] = {"seconds": int(words[2]), "messages": int(words[3])}
            elif kind == "run" and len(words) >= 5:
                run = {"figure": words[1], "transport": words[2], "rep": int(words[3])}
                for kv in words[4:]:
                    k, _, v = kv.partition("=")
                    run[k] = int(v)
                runs.append(run)
            elif kind == "cost" and len(words) >= 4:
                cost = {"figure": words[1], "transport": words[2]}
                for kv in words[3:]:
                    k, _, v = kv.partition("=")
                    if "," in v:  # a profiled function: HITS,NS
                        hits, ns = v.split(",")
                        cost[k] = {"hits": int(hits), "ns": int(ns)}
                    else:
                        cost[k] = int(v)
                costs.append(cost)
            elif kind == "access" and len(words) == 3 and words[2].isdigit():
                access[words[1]] = int(words[2])
            elif kind == "note":
                notes.append(" ".join(words[1:]))
            elif kind == "done":
                done = True
    return probe, idle, runs, notes, costs, access, done


def parse_samples(path):
    """The sampled runs (guest/bench.sh's sampled()): {"FIGURE/TRANSPORT": {"secs", "cpus",
    "ops", "index"}}, and the module symbols the guest printed: [(index of the last sampled
    run before them, [(address, "name [module]")])]."""
    phases, ksym_sets, starts, current = {}, [], {}, None
    with open(path, errors="replace") as f:
        for raw in f:
            words = raw.strip().replace("\r", "").split()
            if words[:2] == ["bench:", "sample"] and len(words) >= 7:
                key = words[3] + "/" + words[4]
                if words[2] == "start":
                    starts[key] = float(words[5])
                elif words[2] == "stop" and key in starts:
                    kv = dict(w.partition("=")[::2] for w in words[7:] if "=" in w)
                    phases[key] = {"secs": float(words[5]) - starts[key],
                                   "cpus": int(words[6]),
                                   "ops": int(kv.get("ops", 0)), "index": len(phases)}
                current = None
            elif words[:2] == ["bench:", "ksym"] and len(words) >= 4:
                if current is None:
                    current = []
                    ksym_sets.append((len(phases) - 1, current))
                module = " " + words[4] if len(words) > 4 else ""
                current.append((int(words[2], 16), words[3] + module))
    return phases, ksym_sets


def system_map():
    variant = os.environ.get("VMSG_VARIANT")
    return os.path.join(TOP, "build/obj%s/System.map" % ("-" + variant if variant else ""))


def device_ns(cost, access):
    """The device's share of a profiled run, in ns. The AMP PCI bus: the time its doorbell
    writes took (it times them), and its accesses to BAR1 (it counts them) times what one
    costs (bench.sh's access_costs()). Virtio-pci, whose kick is one MMIO write: the whole
    kick. The loopback: none."""
    if cost["transport"] == "pci":
        return cost.get("notify", {}).get("ns", 0)
    if cost["transport"] != "msg" or "reads" not in cost:
        return 0
    if not all(k in access for k in ("bar1_read", "bar1_write")):
        return None
    return (bell_ns(cost) * cost["bells"] + cost["reads"] * access["bar1_read"] +
            cost["writes"] * access["bar1_write"])


def bell_ns(cost):
    """What one doorbell took in a profiled run: the bus times one doorbell in 16
    (doorbells_timed, doorbell_ns)."""
    return cost["bellns"] / cost["timed"] if cost.get("timed") else 0


def derive_cost(cost, access):
    """The driver's cost per I/O from a profiled run (bench.sh's cost()): the kick,
    virtqueue_notify() (or virtqueue_kick(), where the guest kernel inlined the one into the
    other); the interrupt path, handle_irq_event() less the vring_interrupt()
    calls within it; within both, the accesses to the device, whose time is the device's
    (device_ns()); the driver's own time is the rest. Times in microseconds."""
    ops = cost.get("ops", 0)
    notify, vring, irq = (cost.get(k, {"hits": 0, "ns": 0}) for k in ("notify", "vring", "irq"))
    if ops <= 0:
        return {}
    d = {"ios": ops, "kicks": notify["hits"] / ops, "vring_interrupts": vring["hits"] / ops}
    if notify["hits"]:
        d["us_per_kick"] = notify["ns"] / notify["hits"] / 1000
    # Interrupts only where they run vring_interrupt(): the loopback's come from a
    # work item, not an interrupt.
    if irq["hits"] and vring["hits"]:
        d["irqs"] = irq["hits"] / ops
        d["us_per_irq"] = max(irq["ns"] - vring["ns"], 0) / irq["hits"] / 1000
        d["irq_us_per_io"] = max(irq["ns"] - vring["ns"], 0) / ops / 1000
    d["kick_us_per_io"] = notify["ns"] / ops / 1000
    d["driver_us_per_io"] = d["kick_us_per_io"] + d.get("irq_us_per_io", 0)
    if "reads" in cost:
        d["accesses"] = (cost["reads"] + cost["writes"] + cost["bells"]) / ops
        if cost.get("timed"):
            d["us_per_doorbell"] = bell_ns(cost) / 1000
    elif cost["transport"] == "pci":
        d["accesses"] = notify["hits"] / ops
    dev = device_ns(cost, access)
    if dev is not None:
        d["device_us_per_io"] = dev / ops / 1000
        d["own_us_per_io"] = max(d["driver_us_per_io"] - d["device_us_per_io"], 0)
    return d


def derive(run):
    """The figures of one run: its rate, and its counts per I/O."""
    fig = run["figure"]
    secs = run["usec"] / 1e6
    if fig.startswith("net"):
        rate = run["bytes"] / run["usec"]  # bytes per microsecond = MB/s
        ios = run["pkts"]  # an I/O of the network device: one packet
    else:
        rate = run["ops"] / secs
        ios = run["ops"]
    d = {"rate": rate}
    if ios <= 0:
        return d
    d["ios"] = ios
    msg = run["transport"] in ("msg", "loopback")
    if msg:
        d["messages"] = (run["sent"] + run["recv"]) / ios
        d["event_avail"] = run["avail"] / ios
        d["event_used"] = run["used"] / ios
    if run["transport"] == "msg":
        d["doorbells"] = run["bells"] / ios
    if run["transport"] in ("msg", "pci"):
        d["device_irqs"] = run["devirq"] / ios
    d["all_irqs"] = run["intr"] / ios
    d["ctxsw"] = run["ctxt"] / ios
    d["cpu_us"] = run["busy"] * (1e6 / USER_HZ) / ios
    d["cpu_busy_pct"] = 100.0 * run["busy"] / run["ticks"] if run["ticks"] else 0.0
    return d


def medians(runs):
    keys = set()
    for r in runs:
        keys |= set(r)
    return {k: statistics.median([r[k] for r in runs if k in r]) for k in sorted(keys)}


def runs_text(meta):
    return "%d run%s of %d s" % (meta["reps"], "" if meta["reps"] == 1 else "s", meta["seconds"])


def fmt_rate(v, unit):
    if unit == "MB/s":
        return "%.2f %s" % (v, unit)
    return "%.0f %s" % (v, unit)


def svg_chart(results, path):
    """Per figure: a bar for each transport, scaled to the larger of the two, the
    ratio, and the figures with no QEMU device in the path as text."""
    esc = lambda text: text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    rows = []
    for key, what, unit in FIGURES:
        fig = results["figures"].get(key)
        if not fig:
            continue
        tr = fig["transports"]
        bars = [(t, tr[t]["median"]["rate"]) for t in ("msg", "pci") if t in tr]
        others = ["%s %s" % (LABEL[t], fmt_rate(tr[t]["median"]["rate"], unit))
                  for t in ("null_blk", "brd", "loopback") if t in tr]
        rows.append((what, unit, bars, others, fig.get("msg_over_pci")))
    width, left, bar_w, row_h = 760, 110, 420, 22
    height = 86 + sum(30 + row_h * len(r[2]) + (18 if r[3] else 0) for r in rows) + 30
    colour = {"msg": "#1f77b4", "pci": "#ff7f0e"}
    meta = results["meta"]
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="12">' % (width, height),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="10" y="22" font-size="15" font-weight="bold">make bench: virtio-msg '
           'against virtio-pci, one guest, QEMU under TCG</text>',
           '<text x="10" y="40" fill="#555">median of %s each; the bars of a figure '
           'are scaled to the larger of the two</text>' % runs_text(meta),
           '<text x="10" y="56" fill="#555">virtio-msg: the emulator over vfio-user, so '
           'msg/pci includes a socket round trip per doorbell and interrupt</text>',
           '<text x="10" y="72" fill="#555">per-I/O counts (messages, doorbells, interrupts, '
           'context switches, CPU time): results.json and the table</text>']
    y = 86
    for what, unit, bars, others, ratio in rows:
        title = "%s (%s)" % (what, unit)
        if ratio is not None:
            title += ": msg/pci = %.2fx" % ratio
        out.append('<text x="10" y="%d" font-weight="bold">%s</text>' % (y + 14, esc(title)))
        y += 22
        top = max([v for _, v in bars] + [1e-9])
        for t, v in bars:
            w = max(1, int(bar_w * v / top))
            out.append('<text x="%d" y="%d" text-anchor="end">%s</text>'
                       % (left - 8, y + 15, LABEL[t]))
            out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>'
                       % (left, y + 2, w, row_h - 5, colour[t]))
            out.append('<text x="%d" y="%d">%s</text>'
                       % (left + w + 6, y + 15, esc(fmt_rate(v, unit))))
            y += row_h
        if others:
            out.append('<text x="%d" y="%d" fill="#555">no QEMU device in the path: %s</text>'
                       % (left, y + 12, esc(", ".join(others))))
            y += 18
        y += 8
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def describe():
    try:
        return subprocess.run(["git", "-C", TOP, "describe", "--always", "--dirty"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def read_first(path):
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return None


def report(results_path, outdir):
    probe, idle, runs, notes, costs, access, done = parse(results_path)
    phases, ksym_sets = parse_samples(results_path)
    sampled = sampling.report(os.path.join(outdir, "samples.txt"), system_map(), ksym_sets,
                             phases)
    counted = sampling.report_counts(os.path.join(outdir, "insns.txt"), system_map(),
                                     ksym_sets, phases)
    seconds = max([r["usec"] for r in runs] or [0]) // 1_000_000
    reps = max([r["rep"] for r in runs] or [0])
    # What the guest found (bench.sh's note): "none" on the bench kernel.
    debugging = next((n.split("debugging:", 1)[1].strip() for n in notes
                      if n.startswith("kernel ") and "debugging:" in n), "unknown")
    results = {
        "meta": {
            "what": "virtio-msg (AMP PCI device served by virtio-msg-emulator over "
                    "vfio-user) against virtio-pci (QEMU's own devices), one guest, "
                    "QEMU under TCG, 2 vCPUs",
            "guest_debugging": debugging,
            "seconds": seconds,
            "reps": reps,
            "io_unit": "blk and rng: one read; net: one packet (received + sent "
                       "on the interface)",
            "complete": done,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": describe(),
            "kernel": read_first(os.path.join(
                TOP, "build/out%s/linux-version" % ("-" + os.environ["VMSG_VARIANT"]
                                                    if os.environ.get("VMSG_VARIANT") else ""))),
        },
        "probe": {},
        "idle": idle,
        "access_ns": access,
        "figures": {},
        "notes": notes,
        "not_measured": NOT_MEASURED,
    }
    for t in TYPES:
        msgs = probe.get(t)
        if not msgs:
            continue
        requests = sum(m["sent"] for name, m in msgs.items() if name not in EVENTS)
        results["probe"][t] = {
            "requests": requests,
            "get_config": msgs.get("GET_CONFIG", {}).get("sent", 0),
            "event_avail": msgs.get("EVENT_AVAIL", {}).get("sent", 0),
            "issue10_device_model": ISSUE10_PROBE[t],
            "messages": msgs,
        }
    for key, _, _ in FIGURES:
        fig = {"transports": {}}
        for t in TRANSPORTS:
            mine = [r for r in runs if r["figure"] == key and r["transport"] == t]
            if mine:
                fig["transports"][t] = {"runs": mine, "median": medians([derive(r) for r in mine])}
        if not fig["transports"]:
            continue
        tr = fig["transports"]
        if "msg" in tr and "pci" in tr and tr["pci"]["median"]["rate"]:
            fig["msg_over_pci"] = tr["msg"]["median"]["rate"] / tr["pci"]["median"]["rate"]
        for c in costs:
            if c["figure"] == key and c["transport"] in tr:
                tr[c["transport"]]["cost"] = {"run": c, "per_io": derive_cost(c, access)}
        for what, profiles in (("sampled", sampled), ("counted", counted)):
            for phase, prof in profiles.items():
                fig_key, _, t = phase.partition("/")
                if fig_key == key and t in tr:
                    tr[t][what] = prof
        results["figures"][key] = fig

    os_json = outdir + "/results.json"
    with open(os_json, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    svg_chart(results, outdir + "/results.svg")
    print_table(results)
    print("bench: wrote %s and %s/results.svg" % (os_json, outdir))
    if not done:
        print("bench: the guest did not finish: the figures above are incomplete")
        return 1
    return 0


def num(v):
    """A per-I/O figure: two decimals, three below 1, '-' if not counted."""
    if v is None:
        return "-"
    return "%.2f" % v if abs(v) >= 1 or v == 0 else "%.3f" % v


def print_table(results):
    meta = results["meta"]
    p = print
    p()
    p("make bench: virtio-msg (the emulator over vfio-user) vs virtio-pci (QEMU's own "
      "devices), one guest, TCG, 2 vCPUs")
    if meta["guest_debugging"] == "none":
        p("median of %s each; guest kernel without lock or allocation debugging"
          % runs_text(meta))
    else:
        p("median of %s each; the guest kernel runs %s, so absolute figures are low "
          "and not for claims: compare transports" % (runs_text(meta), meta["guest_debugging"]))
    p()
    p("Probe: requests the transport sent to bring each device up (debugfs stats of its bus)")
    p("  %-8s %9s %11s %12s %14s %22s" % ("device", "requests", "GET_CONFIG", "EVENT_AVAIL",
                                           "idle msgs/s", "issue 10 (device model)"))
    for t in TYPES:
        pr = results["probe"].get(t)
        if not pr:
            p("  %-8s not measured" % t)
            continue
        idle = results["idle"].get(t)
        idle_s = "%.1f" % (idle["messages"] / idle["seconds"]) if idle else "-"
        p("  %-8s %9d %11d %12d %14s %22d" % (t, pr["requests"], pr["get_config"],
                                             pr["event_avail"], idle_s, pr["issue10_device_model"]))
    p()
    p("Throughput")
    p("  %-40s %16s %16s %10s" % ("", "virtio-msg", "virtio-pci", "msg/pci*"))
    figs = results["figures"]
    for key, what, unit in FIGURES:
        fig = figs.get(key)
        if not fig:
            p("  %-40s not measured" % what)
            continue
        tr = fig["transports"]
        cell = lambda t: fmt_rate(tr[t]["median"]["rate"], unit) if t in tr else "-"
        ratio = "%.2fx" % fig["msg_over_pci"] if "msg_over_pci" in fig else "-"
        p("  %-40s %16s %16s %10s" % (what, cell("msg"), cell("pci"), ratio))
    p("  * with the emulator, msg/pci includes vfio-user's socket round trip per doorbell")
    p("    and per interrupt (virtio-pci's devices run inside QEMU): the per-I/O counts")
    p("    below are what the driver controls.")
    p()
    p("No QEMU device in the path")
    for key, what, unit in FIGURES:
        tr = figs.get(key, {}).get("transports", {})
        for t in ("null_blk", "brd", "loopback"):
            if t in tr:
                p("  %-40s %-20s %16s" % (what, LABEL[t], fmt_rate(tr[t]["median"]["rate"], unit)))
    p()
    p("Per I/O (blk, rng: one read; net: one packet); '-': not counted for that transport")
    cols = [("messages", "msgs"), ("doorbells", "doorbells"), ("event_avail", "EV_AVAIL"),
            ("event_used", "EV_USED"), ("device_irqs", "dev irqs"), ("all_irqs", "all irqs"),
            ("ctxsw", "ctx sw"), ("cpu_us", "CPU us"), ("cpu_busy_pct", "busy %")]
    p("  %-9s %-20s" % ("figure", "transport") + "".join("%10s" % c[1] for c in cols))
    for key, _, _ in FIGURES:
        tr = figs.get(key, {}).get("transports", {})
        for t in TRANSPORTS:
            if t not in tr:
                continue
            m = tr[t]["median"]
            p("  %-9s %-20s" % (key, LABEL[t]) +
              "".join("%10s" % num(m.get(c)) for c, _ in cols))
    p()
    p("Driver cost per I/O: the function profiler, in a run of its own (it slows what it")
    p("times), with the I/O on CPU 0 and the device's interrupts on CPU 1; us per kick:")
    p("virtqueue_notify() (virtio-msg: the message and the doorbell; virtio-pci: the MMIO")
    p("write, with what QEMU does before the write returns; rng: virtqueue_kick(), which")
    p("has virtqueue_notify() inlined); us per interrupt:")
    p("handle_irq_event() less vring_interrupt() (the path from the vector to the")
    p("virtqueue callback); all us: both, per I/O; accesses: MMIO accesses to the device")
    p("per I/O (virtio-msg: BAR1 and doorbells, the bus's counters; virtio-pci: its notify")
    p("writes); dev us: their time, the device's (virtio-msg: its doorbells' time, which")
    p("the bus measures, and its BAR1 accesses times what one costs, measured idle, below;")
    p("virtio-pci: its whole kick, one MMIO write); us/bell: one doorbell of the run; own")
    p("us: all us less dev us, the driver's own. One access to the AMP PCI device, idle:")
    p("  " + (", ".join("%s %s us" % (k, num(v / 1000))
                        for k, v in sorted(results["access_ns"].items())) or "not measured"))
    cols = [("kicks", "kicks"), ("us_per_kick", "us/kick"), ("irqs", "irqs"),
            ("us_per_irq", "us/irq"), ("driver_us_per_io", "all us"),
            ("accesses", "accesses"), ("us_per_doorbell", "us/bell"),
            ("device_us_per_io", "dev us"),
            ("own_us_per_io", "own us")]
    p("  %-9s %-20s" % ("figure", "transport") + "".join("%10s" % c[1] for c in cols))
    measured = False
    for key, _, _ in FIGURES:
        tr = figs.get(key, {}).get("transports", {})
        for t in TRANSPORTS:
            cost = tr.get(t, {}).get("cost", {}).get("per_io")
            if not cost:
                continue
            measured = True
            p("  %-9s %-20s" % (key, LABEL[t]) +
              "".join("%10s" % num(cost.get(c)) for c, _ in cols))
    if not measured:
        p("  not measured (no function profiler in the guest kernel: see the notes)")
    p()
    p("Where the vCPUs' time goes per I/O, sampled (support/sampling.py: QEMU's gdbstub")
    p("stops the guest every 2 ms and reads each vCPU's instruction pointer; the share of")
    p("samples in a function is its share of the vCPUs' time), in a run of its own, pinned")
    p("as above, us per I/O: driver: the transport's own code (virtio-msg: our modules and")
    p("the kernel crate's Rust; virtio-pci: its vp_* functions); device: the MMIO")
    p("accessors, where a vCPU waits for QEMU (the doorbell's vfio-user round trip);")
    p("virtio core: vring_*, virtqueue_* and the device's driver; rest: the rest of the")
    p("kernel and user space; idle: both vCPUs' (one waits while the other works).")
    print_profiles(p, figs, "sampled", "us_per_io", ["driver", "device", "virtio core", "rest",
                                                     "idle"], num, "us")
    if not any(tr.get("counted") for fig in figs.values()
               for tr in fig.get("transports", {}).values()):
        p("Instructions per I/O: not counted (BENCH_SAMPLE=0, or the plugin wrote nothing: see")
        p("build/bench/sampling.log)")
        p()
    else:
        p("Instructions per I/O, counted in the same runs (support/insncount.c, a TCG plugin:")
        p("every block of kernel code run, by the function it starts in; the same categories,")
        p("but rest is the kernel's only; unlike time, hardly different between runs or hosts:")
        p("the figure to compare the drivers' own work by; rest includes spinning and the idle")
        p("loop, which vary):")
        print_profiles(p, figs, "counted", "insns_per_io", ["driver", "virtio core", "rest"],
                       lambda n: "%.0f" % n, "instructions")
    for n in results["not_measured"]:
        p("Not measured: " + n)
    p()
    p("commit %s, kernel %s, %s" % (meta["commit"], meta["kernel"], meta["date"]))
    for n in results["notes"]:
        p("guest: " + n)


def print_profiles(p, figs, what, per_io, cols, fmt, unit):
    """The sampled or the counted runs (sampling.py's report() or report_counts()): per figure
    and transport, the categories, then the driver's costliest functions."""
    samples = what == "sampled"
    p("  %-9s %-20s" % ("figure", "transport") + "".join("%12s" % c for c in cols) +
      ("%9s" % "samples" if samples else ""))
    tops = []
    for key, _, _ in FIGURES:
        tr = figs.get(key, {}).get("transports", {})
        for t in TRANSPORTS:
            prof = tr.get(t, {}).get(what)
            if not prof:
                continue
            p("  %-9s %-20s" % (key, LABEL[t]) +
              "".join("%12s" % fmt(prof[per_io].get(c, 0)) for c in cols) +
              ("%9d" % prof["samples"] if samples else ""))
            if prof["driver_top"]:
                tops.append("  %s, %s: " % (key, LABEL[t]) + "; ".join(
                    "%s %s" % (name, fmt(v)) for name, v in prof["driver_top"][:4]))
    if tops:
        p("The driver's costliest functions, %s per I/O:" % unit)
        for line in tops:
            p(line)
    p()


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "peer":
        peer(sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "report":
        sys.exit(report(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
