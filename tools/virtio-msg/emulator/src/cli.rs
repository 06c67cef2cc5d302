// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The command line (`clap`). The device and fault specifications have small grammars of
//! their own, parsed here and in [`crate::faults`], so that every mistake says what was
//! expected.

use crate::faults::FaultSpec;
use crate::pci::MAX_FIFOS;
use crate::tokens::TokenMode;
use clap::{error::ErrorKind, CommandFactory, Parser, ValueEnum};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use virtio_msg_device::{bus::DEVICES_PER_FIFO, net, Mode};

const ABOUT: &str = "\
Serves the virtio-msg AMP PCI device (PCI 10ee:9039) to QEMU over vfio-user:
  qemu-system-x86_64 -object memory-backend-memfd,id=mem,size=512M,share=on \\
      -machine q35,memory-backend=mem -m 512M \\
      -device '{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"PATH\"}}'";

const AFTER_HELP: &str = "\
The emulator serves one QEMU and exits (status 0) when it disconnects, or on SIGINT/SIGTERM;
the socket is removed on exit.";

const TOKENS_HELP: &str = "\
The token of every message the device sends (the bus owns tokens; a driver must not rely on
them). model: transport responses echo the request's token, bus replies and events carry 0, as
the device model does; zero: every message carries 0; scramble: every response carries a token
other than its request's, varying from message to message, and events arbitrary ones";

const FAULT_HELP: &str = "\
Make the device misbehave on purpose, for tests (repeatable). SPEC is
FIFO:NUM:KIND[,after=N][,count=N][,msg=ID][,every=N][,ms=N][,n=N]: what FIFO FIFO sends for
device number NUM (or 'all') goes wrong; after=N lets its first N messages through, count=N
stops after N messages, msg=ID counts only messages with that message id (msg=0x08:
SET_DEVICE_STATUS answers). KIND:
  silent            nothing more is sent
  drop,every=N      every Nth message is dropped
  twice             every message is sent twice
  garbage           every message becomes undecodable
  lying-size        every header claims 200 bytes
  corrupt-index     the device queue's head goes out of range (once): the queue is broken
  generation-churn  every GET_CONFIG answer brings a new configuration generation
  generation-churn-event  the same, each announced first by an EVENT_CONFIG
  late,ms=N         every message comes N ms late
  reorder           (NUM 'all') every message goes after the next one of another device
  needs-reset       an EVENT_CONFIG with DEVICE_NEEDS_RESET (once)
  status-lie        every SET_DEVICE_STATUS answer adds DRIVER_OK and DEVICE_NEEDS_RESET
  flood-used,n=N    N spurious EVENT_USED every 100 ms
  flood-config,n=N  N spurious EVENT_CONFIG every 100 ms
  stall,ms=N        the backend takes no buffer for N ms from the first kick on (once)
  ping              (NUM 'all') the device PINGs the driver every 100 ms, counts the echoes
  msix-storm,n=N    (NUM 'all') the MSI-X vector is raised N times every 100 ms, with
                    nothing new on the device queue
  ping-burst,n=N    (NUM 'all') N PINGs go on the device queue at once (once); echoes are
                    counted as for ping, with the doorbells rung until the last one came
  index-backwards   the device queue's head moves back 3 slots after a message (once)
  index-jitter[,every=N]  the device queue's head is published one slot too far after
                    every (Nth) message: the driver is told of a slot with nothing new
  slot-rewrite[,ms=N]  every published message's slot is overwritten with 0xff bytes right
                    after its interrupt (N ms after), while the driver may be copying it
  tail-overtake     the driver queue's tail is set 3 slots past the driver's head (once)
  stop-consuming[,ms=N]  the device stops reading the driver queue, for N ms or for good
                    (until cleared), so that it fills up (once; all devices: one queue)
  silent-numbers,n=N  (NUM 'all') GET_DEVICES lists N more device numbers, after the real
                    ones, that never answer anything
  wrong-config      GET_CONFIG answers state an offset 4 bytes too far and carry one byte
                    too few (one too many for an empty read), in turn
  shm-lie           GET_SHM is answered: 0x10000 bytes at 0xfeed0000 (the device model
                    does not answer it)
  vqueue-lie        GET_VQUEUE answers give a maximum size of 0x8000, 1000, 0, in turn
  info-lie          GET_DEVICE_INFO answers claim 0xffff bytes of config and 0xffff queues";

const CONTROL_HELP: &str = "\
A named pipe (created if missing) that takes commands while the emulator runs, one per line:
  fault SPEC         add the fault SPEC (as --fault)
  clear FIFO         no more faults on FIFO FIFO
  unplug FIFO:NUM    take device NUM of FIFO FIFO off the bus (EVENT_DEVICE REMOVED); it
                     keeps its backend (a disk's image, a MAC address) until plugged back
  plug FIFO:NUM      put it back, reset (EVENT_DEVICE READY)
  down FIFO[,pings]  stop FIFO FIFO's device side, as firmware that crashed: it takes no
                     message, sends none, raises no interrupt (with pings: its bus still
                     answers PING); its devices keep their backends
  up FIFO            start it again: devices reset, queues taken over as they are, what
                     waits in the driver queue dropped, EVENT_DEVICE REMOVED then READY
                     for every device
  reboot FIFO[,ms=N][,pings]  down, then up after N ms (1000)";

const DEVICE_HELP: &str = "\
A device on FIFO FIFO (below --fifos) with device number NUM (0 to 31); repeat for more
devices. SPEC is FIFO:NUM:KIND[,key=value...]; KIND and its options:
  rng                                     entropy from /dev/urandom
  blk,file=IMG[,readonly][,serial=S]      block device on a raw image
  net,tap=IFNAME[,mac=M][,host-ip=A.B.C.D/NN]
                                          network device on a TAP interface (CAP_NET_ADMIN)
  net,socket=PATH[,peer=PEER][,mac=M]     network device on a Unix datagram socket
  console,socket=PATH                     console on a Unix stream socket
  console,pty                             console on a new pseudo-terminal";

/// `--mode`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    /// Behave like QEMU's virtio-msg-amp-pci device model (48-byte messages, its quirks)
    Compat,
    /// Follow the specification
    Strict,
}

/// `--log-level`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum LevelArg {
    Error,
    Warn,
    Info,
    Debug,
}

/// The arguments as `clap` sees them; [`parse`] checks them against each other.
#[derive(Debug, Parser)]
#[command(name = "virtio-msg-emulator", version, about = ABOUT, after_help = AFTER_HELP)]
struct Args {
    /// Where to listen (must not exist; its directory must)
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// FIFOs of the device
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=MAX_FIFOS as i64))]
    fifos: u16,
    /// Device model quirks or the specification
    #[arg(long, value_enum, default_value_t = ModeArg::Compat)]
    mode: ModeArg,
    /// The token of every message the device sends
    #[arg(long, value_enum, default_value_t = TokenMode::Model, long_help = TOKENS_HELP)]
    tokens: TokenMode,
    /// How much to log (to stderr)
    #[arg(long, value_enum, default_value_t = LevelArg::Info)]
    log_level: LevelArg,
    /// Make the device misbehave on purpose (see --help)
    #[arg(long = "fault", value_name = "SPEC", value_parser = FaultSpec::from_str,
          long_help = FAULT_HELP)]
    faults: Vec<FaultSpec>,
    /// A named pipe taking "fault SPEC" and "clear FIFO" lines
    #[arg(long, value_name = "PATH", long_help = CONTROL_HELP)]
    control: Option<PathBuf>,
    /// A device: FIFO:NUM:KIND[,key=value...] (see --help)
    #[arg(long = "device", value_name = "SPEC", required = true, value_parser = parse_device,
          long_help = DEVICE_HELP)]
    devices: Vec<DeviceSpec>,
}

/// What the device on one device number is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Entropy from /dev/urandom.
    Rng,
    /// A block device on a raw image.
    Blk {
        /// The image.
        file: PathBuf,
        /// Opened read-only; writes fail.
        read_only: bool,
        /// Serial number reported to the driver.
        serial: Option<String>,
    },
    /// A network device (`tap=...` or `socket=...`, parsed by the network backend's parser).
    Net(net::NetOptions),
    /// A console on a Unix stream socket (`Some`) or a new pseudo-terminal (`None`).
    Console {
        /// The socket path.
        socket: Option<PathBuf>,
    },
}

/// One `--device`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    /// FIFO index.
    pub fifo: usize,
    /// Device number on that FIFO.
    pub num: u16,
    /// What it is.
    pub kind: Kind,
}

/// The whole command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Where to listen.
    pub socket: PathBuf,
    /// Number of FIFOs.
    pub fifos: usize,
    /// Device model or specification behaviour.
    pub mode: Mode,
    /// What becomes of the tokens of what the device sends.
    pub tokens: TokenMode,
    /// How much to log.
    pub log_level: log::LevelFilter,
    /// The devices.
    pub devices: Vec<DeviceSpec>,
    /// Faults to inject.
    pub faults: Vec<FaultSpec>,
    /// The control pipe.
    pub control: Option<PathBuf>,
}

/// A `--device` specification that does not parse, and why.
#[derive(Debug, thiserror::Error)]
#[error("--device {0:?}: {1}")]
pub struct DeviceSpecError(String, Problem);

/// What is wrong with a `--device` specification.
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("expected FIFO:NUM:KIND[,key=value...]")]
    Syntax,
    #[error("FIFO {0:?} is not a number")]
    Fifo(String),
    #[error("NUM {0:?} is not a number")]
    Num(String),
    #[error("unknown device kind {0:?} (rng, blk, net or console)")]
    Kind(String),
    #[error("rng takes no options (got {0:?})")]
    RngOptions(String),
    #[error("unknown {0} option {1:?}")]
    Unknown(String, String),
    #[error("{0} option {1} needs a value ({1}=...)")]
    NoValue(String, String),
    #[error("{0} option {1} given twice")]
    Twice(String, String),
    #[error("{0} needs {1}")]
    Needs(String, &'static str),
    #[error(transparent)]
    Net(#[from] net::NetOptionError),
}

/// Parses `FIFO:NUM:KIND[,options]` (FIFO and NUM are checked against the limits later, when
/// `--fifos` is known).
pub fn parse_device(s: &str) -> Result<DeviceSpec, DeviceSpecError> {
    let err = |problem| DeviceSpecError(s.into(), problem);
    let mut parts = s.splitn(3, ':');
    let (Some(fifo), Some(num), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(err(Problem::Syntax));
    };
    let fifo = fifo.parse().map_err(|_| err(Problem::Fifo(fifo.into())))?;
    let num = num.parse().map_err(|_| err(Problem::Num(num.into())))?;
    let (kind, opts) = rest.split_once(',').unwrap_or((rest, ""));
    let kind = parse_kind(kind, opts).map_err(err)?;
    Ok(DeviceSpec { fifo, num, kind })
}

/// Splits `key=value,flag,...` into pairs (`value` empty for a flag).
fn pairs(opts: &str) -> impl Iterator<Item = (&str, &str)> {
    opts.split(',')
        .filter(|o| !o.is_empty())
        .map(|o| o.split_once('=').unwrap_or((o, "")))
}

fn parse_kind(kind: &str, opts: &str) -> Result<Kind, Problem> {
    let once = |slot: &mut Option<String>, key: &str, value: &str| {
        let (kind, key) = (kind.to_string(), key.to_string());
        if value.is_empty() {
            return Err(Problem::NoValue(kind, key));
        }
        match slot.replace(value.to_string()) {
            Some(_) => Err(Problem::Twice(kind, key)),
            None => Ok(()),
        }
    };
    let unknown = |key: &str| Problem::Unknown(kind.into(), key.into());
    let needs = |what| Problem::Needs(kind.into(), what);
    match kind {
        "rng" => match pairs(opts).next() {
            None => Ok(Kind::Rng),
            Some((key, _)) => Err(Problem::RngOptions(key.into())),
        },
        "blk" => {
            let (mut file, mut serial, mut read_only) = (None, None, false);
            for (key, value) in pairs(opts) {
                match (key, value) {
                    ("file", _) => once(&mut file, key, value)?,
                    ("serial", _) => once(&mut serial, key, value)?,
                    ("readonly", "" | "on" | "true") => read_only = true,
                    ("readonly", "off" | "false") => read_only = false,
                    _ => return Err(unknown(key)),
                }
            }
            let file = file.ok_or(needs("file=IMAGE"))?.into();
            Ok(Kind::Blk {
                file,
                read_only,
                serial,
            })
        }
        "net" if opts.is_empty() => Err(needs("tap=IFNAME or socket=PATH")),
        "net" => Ok(Kind::Net(opts.parse()?)),
        "console" => {
            let (mut socket, mut pty) = (None, false);
            for (key, value) in pairs(opts) {
                match (key, value) {
                    ("socket", _) => once(&mut socket, key, value)?,
                    ("pty", "") => pty = true,
                    _ => return Err(unknown(key)),
                }
            }
            match (socket, pty) {
                (Some(s), false) => Ok(Kind::Console {
                    socket: Some(s.into()),
                }),
                (None, true) => Ok(Kind::Console { socket: None }),
                _ => Err(needs("exactly one of socket=PATH, pty")),
            }
        }
        _ => Err(Problem::Kind(kind.into())),
    }
}

/// Why a socket cannot be created at a path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SocketPathError {
    #[error("--socket: empty path")]
    Empty,
    #[error("--socket {}: the path exists (a stale socket? remove it first)", .0.display())]
    Exists(PathBuf),
    #[error("--socket {}: directory {} does not exist", .0.display(), .1.display())]
    NoDirectory(PathBuf, PathBuf),
}

/// Checks that a socket can be created at `path`: nothing is there, and the directory exists.
pub fn check_socket_path(path: &Path) -> Result<(), SocketPathError> {
    if path.as_os_str().is_empty() {
        return Err(SocketPathError::Empty);
    }
    if path.symlink_metadata().is_ok() {
        return Err(SocketPathError::Exists(path.into()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(SocketPathError::NoDirectory(path.into(), dir.into()));
    }
    Ok(())
}

/// Parses the arguments (without the program name). `--help` and `--version` come back as
/// errors of their kind, which [`clap::Error::exit`] prints to stdout with status 0.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Options, clap::Error> {
    let args = Args::try_parse_from(std::iter::once("virtio-msg-emulator".into()).chain(args))?;
    let invalid = |msg: String| Args::command().error(ErrorKind::ValueValidation, msg);
    let fifos = usize::from(args.fifos);
    for (i, d) in args.devices.iter().enumerate() {
        let at = format!("--device {}:{}", d.fifo, d.num);
        if d.fifo >= fifos {
            return Err(invalid(format!(
                "{at}: FIFO {} out of range (--fifos {fifos}: 0 to {})",
                d.fifo,
                fifos - 1
            )));
        }
        if d.num >= DEVICES_PER_FIFO {
            return Err(invalid(format!(
                "{at}: device number {} out of range (0 to {})",
                d.num,
                DEVICES_PER_FIFO - 1
            )));
        }
        if args.devices[..i]
            .iter()
            .any(|e| (e.fifo, e.num) == (d.fifo, d.num))
        {
            return Err(invalid(format!(
                "{at}: device number {} on FIFO {} given twice",
                d.num, d.fifo
            )));
        }
    }
    if let Some(f) = args.faults.iter().find(|f| f.fifo >= fifos) {
        return Err(invalid(format!(
            "--fault: FIFO {} out of range (--fifos {fifos})",
            f.fifo
        )));
    }
    Ok(Options {
        socket: args.socket,
        fifos,
        mode: match args.mode {
            ModeArg::Compat => Mode::Compat,
            ModeArg::Strict => Mode::Strict,
        },
        tokens: args.tokens,
        log_level: match args.log_level {
            LevelArg::Error => log::LevelFilter::Error,
            LevelArg::Warn => log::LevelFilter::Warn,
            LevelArg::Info => log::LevelFilter::Info,
            LevelArg::Debug => log::LevelFilter::Debug,
        },
        devices: args.devices,
        faults: args.faults,
        control: args.control,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &str) -> Result<Options, String> {
        parse(args.split_whitespace().map(String::from)).map_err(|e| e.to_string())
    }

    fn err(args: &str) -> String {
        run(args).expect_err(args)
    }

    #[test]
    fn a_full_command_line() {
        let o = run(
            "--socket /tmp/s --fifos=2 --mode strict --tokens scramble --log-level debug \
                     --device 0:0:rng --device 1:31:blk,file=/x.img,readonly \
                     --device 0:5:net,tap=t0,mac=52:54:00:00:00:01 --device 1:2:console,socket=/c",
        )
        .unwrap();
        assert_eq!(o.socket, PathBuf::from("/tmp/s"));
        assert_eq!(o.fifos, 2);
        assert_eq!(o.mode, Mode::Strict);
        assert_eq!(o.tokens, TokenMode::Scramble);
        assert_eq!(o.log_level, log::LevelFilter::Debug);
        assert_eq!(
            o.devices,
            vec![
                DeviceSpec {
                    fifo: 0,
                    num: 0,
                    kind: Kind::Rng
                },
                DeviceSpec {
                    fifo: 1,
                    num: 31,
                    kind: Kind::Blk {
                        file: "/x.img".into(),
                        read_only: true,
                        serial: None
                    }
                },
                DeviceSpec {
                    fifo: 0,
                    num: 5,
                    kind: Kind::Net("tap=t0,mac=52:54:00:00:00:01".parse().unwrap())
                },
                DeviceSpec {
                    fifo: 1,
                    num: 2,
                    kind: Kind::Console {
                        socket: Some("/c".into())
                    }
                },
            ]
        );
    }

    #[test]
    fn defaults_and_help() {
        let o = run("--socket s --device 0:3:rng").unwrap();
        assert_eq!((o.fifos, o.mode), (1, Mode::Compat));
        assert_eq!(o.tokens, TokenMode::Model);
        assert_eq!(
            run("--socket s --device 0:3:rng --tokens=zero")
                .unwrap()
                .tokens,
            TokenMode::Zero
        );
        assert_eq!(o.log_level, log::LevelFilter::Info);
        // --help shows the details, even with required options missing.
        let help = parse(["--socket".into(), "s".into(), "--help".into()]).unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        assert!(help.to_string().contains("generation-churn"));
        assert!(help.to_string().contains("stop-consuming[,ms=N]"));
        let help = parse(["-h".to_string()]).unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
    }

    #[test]
    fn mistakes_are_reported() {
        let cases = [
            (
                "--socket s --device 0:0:rng --bogus",
                "unexpected argument '--bogus'",
            ),
            (
                "--socket s --device 0:0:rng --fifos",
                "a value is required for '--fifos <N>'",
            ),
            ("--socket s --device 0:0:rng --fifos 0", "not in 1..=8"),
            ("--socket s --device 0:0:rng --fifos 9", "not in 1..=8"),
            (
                "--socket s --device 0:0:rng --mode fast",
                "invalid value 'fast' for '--mode <MODE>'",
            ),
            (
                "--socket s --device 0:0:rng --tokens echo",
                "[possible values: model, zero, scramble]",
            ),
            (
                "--socket s --device 0:0:rng --tokens zero --tokens model",
                "'--tokens <TOKENS>' cannot be used multiple times",
            ),
            (
                "--socket s --device 0:0:rng --log-level loud",
                "[possible values: error, warn, info, debug]",
            ),
            (
                "--socket s --socket t --device 0:0:rng",
                "'--socket <PATH>' cannot be used multiple times",
            ),
            (
                "--device 0:0:rng",
                "required arguments were not provided:\n  --socket <PATH>",
            ),
            ("--socket s", "--device <SPEC>"),
            ("--socket s --device 1:0:rng", "FIFO 1 out of range"),
            (
                "--socket s --fifos 2 --device 2:0:rng",
                "FIFO 2 out of range",
            ),
            (
                "--socket s --device 0:32:rng",
                "device number 32 out of range",
            ),
            (
                "--socket s --device 0:4:rng --device 0:4:rng",
                "given twice",
            ),
            ("--socket s --device x:0:rng", "FIFO \"x\" is not a number"),
            ("--socket s --device 0:-1:rng", "NUM \"-1\" is not a number"),
            ("--socket s --device 0:1", "expected FIFO:NUM:KIND"),
            ("--socket s --device 0:1:gpu", "unknown device kind"),
            ("--socket s --device 0:1:rng,fast", "rng takes no options"),
            ("--socket s --device 0:1:blk", "blk needs file=IMAGE"),
            ("--socket s --device 0:1:blk,file=", "needs a value"),
            ("--socket s --device 0:1:blk,file=a,file=b", "given twice"),
            (
                "--socket s --device 0:1:blk,file=a,cache=x",
                "unknown blk option",
            ),
            ("--socket s --device 0:1:net", "net needs tap=IFNAME"),
            ("--socket s --device 0:1:net,tap=t,mac=1:2", "MAC address"),
            (
                "--socket s --device 0:1:net,tap=t,host-ip=1.2.3.4",
                "A.B.C.D/NN",
            ),
            (
                "--socket s --device 0:1:net,tap=t,speed=9",
                "unknown net option",
            ),
            ("--socket s --device 0:1:console", "exactly one of"),
            (
                "--socket s --device 0:1:console,socket=a,pty",
                "exactly one of",
            ),
        ];
        for (args, want) in cases {
            let e = err(args);
            assert!(e.contains(want), "{args}: {e:?} lacks {want:?}");
        }
        // The same device number on different FIFOs is fine.
        assert!(run("--socket s --fifos 2 --device 0:4:rng --device 1:4:rng").is_ok());
    }

    #[test]
    fn socket_paths() {
        let dir = std::env::temp_dir().join(format!("vmsg-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        assert_eq!(check_socket_path(&sock), Ok(()));
        std::fs::write(&sock, b"").unwrap();
        assert!(check_socket_path(&sock)
            .unwrap_err()
            .to_string()
            .contains("the path exists"));
        let missing = dir.join("nope").join("s.sock");
        assert!(check_socket_path(&missing)
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        assert!(check_socket_path(Path::new("")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
