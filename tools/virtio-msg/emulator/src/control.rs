// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The control pipe (`--control PATH`): faults switched while the guest runs.
//!
//! A named pipe rather than a socket: any shell can write to it (`echo "fault 0:1:silent" >
//! PATH`), and the e2e runner relays the guest's requests to it from the guest's result port.
//! The pipe is opened for reading and writing, so it never reads end-of-file when a writer
//! goes away. Every command is logged, with the error if it is refused: a writer cannot read an
//! answer.

use crate::faults::{FaultParseError, FaultSpec, Faults};
use crate::server::Workers;
use log::{info, warn};
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A line that is refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Fault(#[from] FaultParseError),
    #[error("clear {0:?}: FIFO is not a number")]
    ClearFifo(String),
    #[error("{0:?}: expected 'fault SPEC' or 'clear FIFO'")]
    Syntax(String),
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
}

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
            _ => Err(ControlError::Syntax(line.into())),
        }
    }
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

    /// Applies `req`; returns the FIFO whose faults changed and what they are now.
    pub fn apply(&mut self, req: Request) -> Result<(usize, Faults), ControlError> {
        let fifo = match req {
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
        Ok((fifo, Faults::for_fifo(fifo, &self.specs)))
    }

    fn check(&self, fifo: usize) -> Result<(), ControlError> {
        if fifo < self.fifos {
            Ok(())
        } else {
            Err(ControlError::OutOfRange(fifo, self.fifos))
        }
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
                    Ok((fifo, faults)) => {
                        let sent = workers
                            .lock()
                            .ok()
                            .and_then(|w| w.get(fifo).map(|h| h.set_faults(faults)));
                        if sent == Some(true) {
                            info!("control: {line}: done");
                        } else {
                            warn!("control: {line}: the FIFO worker is gone");
                        }
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

    #[test]
    fn commands_parse_and_change_the_faults_of_one_fifo() {
        let mut c = Control::new(vec!["1:0:silent".parse().unwrap()], 2);
        let (fifo, f) = c
            .apply(Request::parse("fault 0:2:late,ms=10").unwrap())
            .unwrap();
        assert_eq!(fifo, 0);
        assert!(!f.is_empty());
        let (fifo, f) = c.apply(Request::parse(" clear 0 ").unwrap()).unwrap();
        assert_eq!(fifo, 0);
        assert!(f.is_empty());
        // FIFO 1 keeps its fault.
        let (_, f) = c.apply(Request::parse("fault 1:1:twice").unwrap()).unwrap();
        assert!(!f.is_empty());
        assert_eq!(c.specs.len(), 2);
        // Every kind goes through the pipe, the ones that act on the queues too.
        let (fifo, f) = c
            .apply(Request::parse("fault 0:all:stop-consuming,ms=100").unwrap())
            .unwrap();
        assert_eq!((fifo, f.is_empty()), (0, false));
        c.apply(Request::parse("clear 0").unwrap()).unwrap();
        for (bad, why) in [
            ("melt 0", "expected 'fault SPEC'"),
            ("clear x", "FIFO is not a number"),
            ("fault 0:1", "expected FIFO:NUM:KIND"),
        ] {
            let e = Request::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = c.apply(Request::parse("clear 2").unwrap()).unwrap_err();
        assert_eq!(e.to_string(), "FIFO 2 out of range (--fifos 2)");
    }
}
