// SPDX-License-Identifier: GPL-2.0 OR MIT

//! `virtio-msg-emulator`: serves the virtio-msg AMP PCI device to one QEMU over vfio-user.
//!
//! Start-up opens everything the command line names before the socket appears (so a script
//! waiting for the socket knows the devices are ready), then serves QEMU until it disconnects.
//! SIGINT and SIGTERM are taken by a thread of their own (blocked everywhere else, so no
//! system call is interrupted halfway): it stops the FIFO workers, removes the socket and
//! exits with status 0, as does a QEMU disconnect.

use log::{error, info};
use std::error::Error;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use virtio_msg_device::bus::FifoBus;
use virtio_msg_emulator::{
    backends,
    cli::{self, Options},
    control::{self, Control},
    faults::Faults,
    logger, pci,
    server::{self, Device, GuestMem, Workers},
    shm::SharedMem,
    worker::{Fifo, FifoHandle},
};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

/// The signals that end the emulator.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Stops the workers (once: whoever comes first, the signal thread or the main thread).
fn stop_workers(workers: &Workers) {
    let handles = workers
        .lock()
        .map(|mut w| std::mem::take(&mut *w))
        .unwrap_or_default();
    for h in handles {
        h.stop();
    }
}

/// Waits for SIGINT/SIGTERM, then shuts down and exits.
fn spawn_signal_thread(workers: Workers, socket: &Path) -> Result<(), String> {
    let socket = socket.to_path_buf();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = stop_signals();
            let mut sig = 0;
            // SAFETY: `set` and `sig` are valid for the call; the signals are blocked in
            // every thread (the mask was set before any thread was started).
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                error!("sigwait failed; signals will not stop the emulator cleanly");
                return;
            }
            info!("signal {sig}: shutting down");
            stop_workers(&workers);
            let _ = std::fs::remove_file(&socket);
            std::process::exit(0);
        })
        .map(|_| ())
        .map_err(|e| format!("signal thread: {e}"))
}

fn run(opts: Options) -> Result<(), Box<dyn Error>> {
    logger::init(opts.log_level);
    cli::check_socket_path(&opts.socket)?;
    let set = stop_signals();
    // SAFETY: blocks the stop signals in this thread, before any other thread exists, so
    // that every thread inherits the mask and only sigwait() sees them.
    if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } != 0 {
        return Err("cannot block SIGINT/SIGTERM".into());
    }

    let mem: GuestMem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let mut buses: Vec<FifoBus> = (0..opts.fifos).map(|_| FifoBus::new(opts.mode)).collect();
    for d in &opts.devices {
        let what = format!("--device {}:{}", d.fifo, d.num);
        let backend =
            backends::build(&d.kind, d.fifo, d.num, &mem).map_err(|e| format!("{what}: {e}"))?;
        let bus = buses
            .get_mut(d.fifo)
            .ok_or_else(|| format!("{what}: no such FIFO"))?;
        bus.attach(d.num, backend)
            .map_err(|e| format!("{what}: {e}"))?;
        info!("FIFO {} device {}: {:?}", d.fifo, d.num, d.kind);
    }
    for (n, bus) in buses.iter_mut().enumerate() {
        if bus.devices_mut().next().is_none() {
            info!("FIFO {n} has no device (QEMU's device model would crash on its doorbell)");
        }
    }

    let bar1 = Arc::new(
        SharedMem::new("virtio-msg-bar1", pci::bar1_size(opts.fifos) as usize)
            .map_err(|e| format!("BAR1 memory: {e}"))?,
    );
    let mut handles = Vec::new();
    for (n, bus) in buses.into_iter().enumerate() {
        let mut fifo = Fifo::new(n, bus, opts.mode, opts.tokens, bar1.clone())
            .map_err(|e| format!("FIFO {n}: {e}"))?;
        fifo.set_faults(Faults::for_fifo(n, &opts.faults));
        handles.push(FifoHandle::spawn(fifo).map_err(|e| format!("FIFO {n} worker: {e}"))?);
    }
    let workers: Workers = Arc::new(Mutex::new(handles));
    let server = vfio_user::Server::new(
        &opts.socket,
        true,
        server::irqs(opts.fifos),
        server::regions(&bar1),
    )
    .map_err(|e| format!("--socket {}: {e}", opts.socket.display()))?;
    spawn_signal_thread(workers.clone(), &opts.socket)?;
    if let Some(path) = &opts.control {
        let control = Control::new(opts.faults.clone(), opts.fifos);
        control::spawn(path, control, workers.clone())
            .map_err(|e| format!("--control {}: {e}", path.display()))?;
    }
    info!(
        "listening on {} ({} FIFOs, {:?} mode, tokens {:?})",
        opts.socket.display(),
        opts.fifos,
        opts.mode,
        opts.tokens
    );

    let mut device = Device::new(workers.clone(), bar1, mem);
    let result = server.run(&mut device);
    stop_workers(&workers);
    drop(server);
    match result {
        Ok(()) => {
            info!("QEMU disconnected");
            Ok(())
        }
        Err(vfio_user::Error::SocketAccept(e)) => Err(format!("accept: {e}").into()),
        Err(e) => {
            // The connection broke (QEMU killed): the same end as a disconnect.
            info!("connection ended: {e}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let opts = match cli::parse(std::env::args().skip(1)) {
        Ok(opts) => opts,
        // Help and version to stdout with status 0, mistakes to stderr with status 2.
        Err(e) => e.exit(),
    };
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virtio-msg-emulator: {e}");
            ExitCode::FAILURE
        }
    }
}
