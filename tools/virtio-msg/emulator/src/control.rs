// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The control pipe (`--control PATH`): faults switched, and devices taken off the bus and
//! put back, while the guest runs.
//!
//! A named pipe rather than a socket: any shell can write to it (`echo "fault 0:1:silent" >
//! PATH`), and the e2e runner relays the guest's requests to it from the guest's result port.
//! The pipe is opened for reading and writing, so it never reads end-of-file when a writer
//! goes away. Every command is logged, with the error if it is refused: a writer cannot read an
//! answer.

use crate::faults::{FaultParseError, FaultSpec, Faults};
use crate::server::Workers;
use crate::worker::Down;
use log::{info, warn};
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;
use virtio_msg_device::bus::DEVICES_PER_FIFO;

/// How long a plug or unplug waits for the FIFO's worker.
const PLUG_TIMEOUT: Duration = Duration::from_secs(5);

/// A line that is refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Fault(#[from] FaultParseError),
    #[error("clear {0:?}: FIFO is not a number")]
    ClearFifo(String),
    #[error(
        "{0:?}: expected 'fault SPEC', 'clear FIFO', 'unplug FIFO:NUM', 'plug FIFO:NUM', \
         'down FIFO[,pings]', 'up FIFO' or 'reboot FIFO[,ms=N][,pings]'"
    )]
    Syntax(String),
    #[error("{0:?}: expected FIFO[,ms=N][,pings]")]
    Power(String),
    #[error("{0:?}: expected FIFO:NUM, NUM below 32")]
    Device(String),
    #[error("FIFO {0} out of range (--fifos {1})")]
    OutOfRange(usize, usize),
}

/// What one line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Add a fault.
    Fault(FaultSpec),
    /// No more faults on a FIFO.
    Clear(usize),
    /// Take device NUM of a FIFO off the bus (`false`) or put it back (`true`).
    Plug {
        fifo: usize,
        dev_num: u16,
        present: bool,
    },
    /// Stop a FIFO's device side (`down`, and `reboot` with a time).
    Down(usize, Down),
    /// Start it again.
    Up(usize),
}

/// How long a `reboot` keeps the device side down unless told: a quick restart, which a
/// driver's keepalive (three periods of 1 s by default) does not see; the driver learns of it
/// from the EVENT_DEVICE messages it sends when it starts again.
const REBOOT_MS: u64 = 1000;

impl Request {
    /// Parses one line.
    pub fn parse(line: &str) -> Result<Self, ControlError> {
        let line = line.trim();
        match line.split_once(' ') {
            Some(("fault", spec)) => Ok(Self::Fault(spec.trim().parse()?)),
            Some(("clear", fifo)) => fifo
                .trim()
                .parse()
                .map(Self::Clear)
                .map_err(|_| ControlError::ClearFifo(fifo.into())),
            Some((verb @ ("plug" | "unplug"), which)) => {
                let bad = || ControlError::Device(which.trim().into());
                let (fifo, num) = which.trim().split_once(':').ok_or_else(bad)?;
                Ok(Self::Plug {
                    fifo: fifo.parse().map_err(|_| bad())?,
                    dev_num: num
                        .parse()
                        .ok()
                        .filter(|&n| n < DEVICES_PER_FIFO)
                        .ok_or_else(bad)?,
                    present: verb == "plug",
                })
            }
            Some((verb @ ("down" | "up" | "reboot"), args)) => {
                let bad = || ControlError::Power(args.trim().into());
                let mut args = args.trim().split(',');
                let fifo = args.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
                let (mut pings, mut ms) = (false, None);
                for arg in args {
                    match arg.split_once('=') {
                        None if arg == "pings" && verb != "up" => pings = true,
                        Some(("ms", n)) if verb == "reboot" => {
                            ms = Some(n.parse().map_err(|_| bad())?)
                        }
                        _ => return Err(bad()),
                    }
                }
                Ok(match verb {
                    "up" => Self::Up(fifo),
                    "down" => Self::Down(
                        fifo,
                        Down {
                            pings,
                            for_ms: None,
                        },
                    ),
                    _ => Self::Down(
                        fifo,
                        Down {
                            pings,
                            for_ms: Some(ms.unwrap_or(REBOOT_MS)),
                        },
                    ),
                })
            }
            _ => Err(ControlError::Syntax(line.into())),
        }
    }
}

/// What a request asks of a FIFO's worker.
pub enum Action {
    /// These are the FIFO's faults now (boxed: the other variant is small).
    Faults(usize, Box<Faults>),
    /// Take a device off the bus (`present` false) or put it back.
    Plug {
        fifo: usize,
        dev_num: u16,
        present: bool,
    },
    /// Stop a FIFO's device side.
    Down(usize, Down),
    /// Start it again.
    Up(usize),
}

/// The faults in force, as the control pipe changes them.
pub struct Control {
    specs: Vec<FaultSpec>,
    fifos: usize,
}

impl Control {
    /// Starts from the faults of the command line.
    pub fn new(specs: Vec<FaultSpec>, fifos: usize) -> Self {
        Self { specs, fifos }
    }

    /// Applies `req`: what to tell which FIFO's worker.
    pub fn apply(&mut self, req: Request) -> Result<Action, ControlError> {
        let fifo = match req {
            Request::Plug {
                fifo,
                dev_num,
                present,
            } => {
                self.check(fifo)?;
                return Ok(Action::Plug {
                    fifo,
                    dev_num,
                    present,
                });
            }
            Request::Down(fifo, down) => {
                self.check(fifo)?;
                return Ok(Action::Down(fifo, down));
            }
            Request::Up(fifo) => {
                self.check(fifo)?;
                return Ok(Action::Up(fifo));
            }
            Request::Fault(spec) => {
                self.check(spec.fifo)?;
                self.specs.push(spec);
                spec.fifo
            }
            Request::Clear(fifo) => {
                self.check(fifo)?;
                self.specs.retain(|s| s.fifo != fifo);
                fifo
            }
        };
        Ok(Action::Faults(
            fifo,
            Box::new(Faults::for_fifo(fifo, &self.specs)),
        ))
    }

    fn check(&self, fifo: usize) -> Result<(), ControlError> {
        if fifo < self.fifos {
            Ok(())
        } else {
            Err(ControlError::OutOfRange(fifo, self.fifos))
        }
    }
}

/// Logs what became of `line`, which was `sent` to a worker (`None`: there is none).
fn done(line: &str, sent: Option<bool>) {
    if sent == Some(true) {
        info!("control: {line}: done");
    } else {
        warn!("control: {line}: the FIFO worker is gone");
    }
}

/// Creates the pipe at `path` if there is nothing there yet, and serves it from a thread.
pub fn spawn(path: &Path, mut control: Control, workers: Workers) -> io::Result<()> {
    if !path.exists() {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in the path"))?;
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let pipe = OpenOptions::new().read(true).write(true).open(path)?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let applied = Request::parse(&line).and_then(|r| control.apply(r));
                match applied {
                    Ok(Action::Faults(fifo, faults)) => {
                        let sent = workers
                            .lock()
                            .ok()
                            .and_then(|w| w.get(fifo).map(|h| h.set_faults(*faults)));
                        done(&line, sent);
                    }
                    Ok(Action::Plug {
                        fifo,
                        dev_num,
                        present,
                    }) => {
                        let done = workers.lock().ok().and_then(|w| {
                            w.get(fifo).map(|h| h.plug(dev_num, present, PLUG_TIMEOUT))
                        });
                        match done {
                            Some(Some(true)) => info!("control: {line}: done"),
                            Some(Some(false)) => warn!("control: {line}: no such device"),
                            _ => warn!("control: {line}: the FIFO worker is gone"),
                        }
                    }
                    Ok(Action::Down(fifo, down)) => {
                        let sent = workers
                            .lock()
                            .ok()
                            .and_then(|w| w.get(fifo).map(|h| h.down(down)));
                        done(&line, sent);
                    }
                    Ok(Action::Up(fifo)) => {
                        let sent = workers
                            .lock()
                            .ok()
                            .and_then(|w| w.get(fifo).map(|h| h.up()));
                        done(&line, sent);
                    }
                    Err(e) => warn!("control: refused: {e}"),
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The faults `line` leaves on a FIFO, and which.
    fn faults(c: &mut Control, line: &str) -> (usize, Faults) {
        match c.apply(Request::parse(line).unwrap()) {
            Ok(Action::Faults(fifo, f)) => (fifo, *f),
            _ => panic!("{line}: not a fault change"),
        }
    }

    #[test]
    fn commands_parse_and_change_the_faults_of_one_fifo() {
        let mut c = Control::new(vec!["1:0:silent".parse().unwrap()], 2);
        let (fifo, f) = faults(&mut c, "fault 0:2:late,ms=10");
        assert_eq!(fifo, 0);
        assert!(!f.is_empty());
        let (fifo, f) = faults(&mut c, " clear 0 ");
        assert_eq!(fifo, 0);
        assert!(f.is_empty());
        // FIFO 1 keeps its fault.
        let (_, f) = faults(&mut c, "fault 1:1:twice");
        assert!(!f.is_empty());
        assert_eq!(c.specs.len(), 2);
        // Every kind goes through the pipe, the ones that act on the queues too.
        let (fifo, f) = faults(&mut c, "fault 0:all:stop-consuming,ms=100");
        assert_eq!((fifo, f.is_empty()), (0, false));
        faults(&mut c, "clear 0");
        for (bad, why) in [
            ("melt 0", "expected 'fault SPEC'"),
            ("clear x", "FIFO is not a number"),
            ("fault 0:1", "expected FIFO:NUM:KIND"),
        ] {
            let e = Request::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        // Devices off the bus and back: FIFO:NUM, NUM below 32.
        assert_eq!(
            Request::parse("unplug 1:0").unwrap(),
            Request::Plug {
                fifo: 1,
                dev_num: 0,
                present: false
            }
        );
        assert_eq!(
            Request::parse(" plug 0:31 ").unwrap(),
            Request::Plug {
                fifo: 0,
                dev_num: 31,
                present: true
            }
        );
        for bad in ["plug 0:32", "plug 0", "unplug x:1", "plug 0:-1"] {
            let e = Request::parse(bad).unwrap_err().to_string();
            assert!(e.contains("expected FIFO:NUM"), "{bad}: {e}");
        }
        assert!(matches!(
            c.apply(Request::parse("unplug 1:0").unwrap()),
            Ok(Action::Plug {
                fifo: 1,
                dev_num: 0,
                present: false
            })
        ));
        for line in ["clear 2", "plug 2:0", "down 2", "up 2", "reboot 2,ms=5"] {
            let e = c.apply(Request::parse(line).unwrap()).err().unwrap();
            assert_eq!(e.to_string(), "FIFO 2 out of range (--fifos 2)");
        }
    }

    #[test]
    fn a_device_side_goes_down_and_up() {
        let down = |pings, for_ms| Down { pings, for_ms };
        for (line, want) in [
            ("down 1", Request::Down(1, down(false, None))),
            ("down 0,pings", Request::Down(0, down(true, None))),
            ("up 1", Request::Up(1)),
            ("reboot 0", Request::Down(0, down(false, Some(1000)))),
            (
                "reboot 1,ms=250,pings",
                Request::Down(1, down(true, Some(250))),
            ),
        ] {
            assert_eq!(Request::parse(line).unwrap(), want, "{line}");
        }
        for bad in [
            "down x",
            "up 0,pings",
            "down 0,ms=5",
            "reboot 0,ms=x",
            "reboot 0,up",
        ] {
            let e = Request::parse(bad).unwrap_err().to_string();
            assert!(e.contains("expected FIFO[,ms=N][,pings]"), "{bad}: {e}");
        }
        let mut c = Control::new(Vec::new(), 2);
        assert!(matches!(
            c.apply(Request::parse("reboot 1,ms=5").unwrap()),
            Ok(Action::Down(
                1,
                Down {
                    for_ms: Some(5),
                    ..
                }
            ))
        ));
        assert!(matches!(c.apply(Request::Up(0)), Ok(Action::Up(0))));
    }
}
