// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The command line, parsed by hand: a handful of options do not need a parser crate, and
//! every mistake gets a message that says what was expected.

use crate::faults::FaultSpec;
use crate::pci::MAX_FIFOS;
use crate::tokens::TokenMode;
use std::path::{Path, PathBuf};
use virtio_msg_device::{bus::DEVICES_PER_FIFO, net::NetOptions, Mode};

/// The usage text of `--help`.
pub const USAGE: &str = "\
usage: virtio-msg-emulator --socket PATH [--fifos N] [--mode compat|strict]
                           [--tokens model|zero|scramble]
                           [--log-level error|warn|info|debug]
                           [--fault FIFO:NUM:KIND[,OPTION=N...]]...
                           [--control PATH]
                           --device FIFO:NUM:KIND[,key=value...] [--device ...]

Serves the virtio-msg AMP PCI device (PCI 10ee:9039) to QEMU over vfio-user:
  qemu-system-x86_64 -object memory-backend-memfd,id=mem,size=512M,share=on \\
      -machine q35,memory-backend=mem -m 512M \\
      -device '{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"PATH\"}}'

Options:
  --socket PATH      where to listen (must not exist; its directory must)
  --fifos N          FIFOs of the device, 1 to 8 (default 1)
  --mode MODE        compat: behave like QEMU's virtio-msg-amp-pci device model
                     (48-byte messages, its quirks); strict: the specification
                     (default compat)
  --tokens MODE      the token of every message the device sends (the bus owns
                     tokens; a driver must not rely on them): model: transport
                     responses echo the request's token, bus replies and events
                     carry 0, as the device model does (default); zero: every
                     message carries 0; scramble: every response carries a
                     token other than its request's, varying from message to
                     message, and events arbitrary ones
  --log-level LEVEL  error, warn, info (default) or debug; the log goes to stderr
  --fault SPEC       make the device misbehave on purpose, for tests: what FIFO
                     FIFO sends for device number NUM (or 'all') goes wrong;
                     after=N lets its first N messages through, count=N stops
                     after N messages. KIND:
                       silent         nothing more is sent
                       drop,every=N   every Nth message is dropped
                       twice          every message is sent twice
                       garbage        every message becomes undecodable
                       lying-size     every header claims 200 bytes
                       corrupt-index  the device queue's head goes out of
                                      range (once): the queue is broken
                       generation-churn
                                      every GET_CONFIG answer brings a new
                                      configuration generation
                       late,ms=N      every message comes N ms late
                       reorder        (NUM 'all') every message goes after
                                      the next one of another device
                       needs-reset    an EVENT_CONFIG with DEVICE_NEEDS_RESET
                                      (once)
                       flood-used,n=N N spurious EVENT_USED every 100 ms
                       flood-config,n=N
                                      N spurious EVENT_CONFIG every 100 ms
                       stall,ms=N     the backend takes no buffer for N ms
                                      from the first kick on (once)
                       ping           (NUM 'all') the device PINGs the driver
                                      every 100 ms and counts the echoes
  --control PATH     a named pipe (created if missing) that takes commands
                     while the emulator runs, one per line:
                       fault SPEC     add the fault SPEC (as --fault)
                       clear FIFO     no more faults on FIFO FIFO
  --device SPEC      a device on FIFO FIFO (below --fifos) with device number NUM
                     (0 to 31); repeat for more devices. KIND and its options:
                       rng                          entropy from /dev/urandom
                       blk,file=IMG[,readonly][,serial=S]
                                                    block device on a raw image
                       net,tap=IFNAME[,mac=M][,host-ip=A.B.C.D/NN]
                                                    network device on a TAP
                                                    interface (CAP_NET_ADMIN)
                       net,socket=PATH[,peer=PEER][,mac=M]
                                                    network device on a Unix
                                                    datagram socket
                       console,socket=PATH          console on a Unix stream socket
                       console,pty                  console on a new pseudo-terminal
  -h, --help         this text

The emulator serves one QEMU and exits (status 0) when it disconnects, or on
SIGINT/SIGTERM; the socket is removed on exit.
";

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
    Net(NetOptions),
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

/// The log levels of `--log-level`.
pub const LOG_LEVELS: [(&str, log::LevelFilter); 4] = [
    ("error", log::LevelFilter::Error),
    ("warn", log::LevelFilter::Warn),
    ("info", log::LevelFilter::Info),
    ("debug", log::LevelFilter::Debug),
];

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

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Print [`USAGE`] and exit.
    Help,
    /// Run.
    Run(Options),
}

/// Parses `FIFO:NUM:KIND[,options]` (FIFO and NUM are checked against the limits later, when
/// `--fifos` is known).
pub fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    let mut parts = s.splitn(3, ':');
    let (Some(fifo), Some(num), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "--device {s:?}: expected FIFO:NUM:KIND[,key=value...]"
        ));
    };
    let fifo = fifo
        .parse()
        .map_err(|_| format!("--device {s:?}: FIFO {fifo:?} is not a number"))?;
    let num = num
        .parse()
        .map_err(|_| format!("--device {s:?}: NUM {num:?} is not a number"))?;
    let (kind, opts) = rest.split_once(',').unwrap_or((rest, ""));
    let kind = parse_kind(kind, opts).map_err(|e| format!("--device {s:?}: {e}"))?;
    Ok(DeviceSpec { fifo, num, kind })
}

/// Splits `key=value,flag,...` into pairs (`value` empty for a flag).
fn pairs(opts: &str) -> impl Iterator<Item = (&str, &str)> {
    opts.split(',')
        .filter(|o| !o.is_empty())
        .map(|o| o.split_once('=').unwrap_or((o, "")))
}

fn parse_kind(kind: &str, opts: &str) -> Result<Kind, String> {
    let once = |slot: &mut Option<String>, key: &str, value: &str| {
        if value.is_empty() {
            return Err(format!("{kind} option {key} needs a value ({key}=...)"));
        }
        match slot.replace(value.to_string()) {
            Some(_) => Err(format!("{kind} option {key} given twice")),
            None => Ok(()),
        }
    };
    match kind {
        "rng" => match pairs(opts).next() {
            None => Ok(Kind::Rng),
            Some((key, _)) => Err(format!("rng takes no options (got {key:?})")),
        },
        "blk" => {
            let (mut file, mut serial, mut read_only) = (None, None, false);
            for (key, value) in pairs(opts) {
                match (key, value) {
                    ("file", _) => once(&mut file, key, value)?,
                    ("serial", _) => once(&mut serial, key, value)?,
                    ("readonly", "" | "on" | "true") => read_only = true,
                    ("readonly", "off" | "false") => read_only = false,
                    _ => return Err(format!("unknown blk option {key:?}")),
                }
            }
            let file = file.ok_or("blk needs file=IMAGE")?.into();
            Ok(Kind::Blk {
                file,
                read_only,
                serial,
            })
        }
        "net" => {
            if opts.is_empty() {
                return Err("net needs tap=IFNAME or socket=PATH".into());
            }
            Ok(Kind::Net(opts.parse()?))
        }
        "console" => {
            let (mut socket, mut pty) = (None, false);
            for (key, value) in pairs(opts) {
                match (key, value) {
                    ("socket", _) => once(&mut socket, key, value)?,
                    ("pty", "") => pty = true,
                    _ => return Err(format!("unknown console option {key:?}")),
                }
            }
            match (socket, pty) {
                (Some(s), false) => Ok(Kind::Console {
                    socket: Some(s.into()),
                }),
                (None, true) => Ok(Kind::Console { socket: None }),
                _ => Err("console needs exactly one of socket=PATH, pty".into()),
            }
        }
        _ => Err(format!(
            "unknown device kind {kind:?} (rng, blk, net or console)"
        )),
    }
}

/// Checks that a socket can be created at `path`: nothing is there, and the directory exists.
pub fn check_socket_path(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("--socket: empty path".into());
    }
    if path.symlink_metadata().is_ok() {
        return Err(format!(
            "--socket {}: the path exists (a stale socket? remove it first)",
            path.display()
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "--socket {}: directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    Ok(())
}

/// Parses the arguments (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let args: Vec<String> = args.into_iter().collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help);
    }
    let mut args = args.into_iter();
    let (mut socket, mut fifos, mut mode, mut log_level) = (None, None, None, None);
    let mut tokens = None;
    let mut devices = Vec::new();
    let mut faults = Vec::new();
    let mut control = None;
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if !matches!(
            name.as_str(),
            "--socket"
                | "--fifos"
                | "--mode"
                | "--tokens"
                | "--log-level"
                | "--device"
                | "--fault"
                | "--control"
        ) {
            return Err(format!("unknown option {arg:?} (see --help)"));
        }
        let value = inline
            .or_else(|| args.next())
            .ok_or_else(|| format!("{name} needs a value"))?;
        let twice = |given: bool| {
            if given {
                Err(format!("{name} given twice"))
            } else {
                Ok(())
            }
        };
        match name.as_str() {
            "--socket" => {
                twice(socket.is_some())?;
                socket = Some(PathBuf::from(value));
            }
            "--fifos" => {
                twice(fifos.is_some())?;
                let n = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_FIFOS).contains(n))
                    .ok_or_else(|| format!("--fifos {value:?}: expected 1 to {MAX_FIFOS}"))?;
                fifos = Some(n);
            }
            "--mode" => {
                twice(mode.is_some())?;
                mode = Some(match value.as_str() {
                    "compat" => Mode::Compat,
                    "strict" => Mode::Strict,
                    _ => return Err(format!("--mode {value:?}: expected compat or strict")),
                });
            }
            "--tokens" => {
                twice(tokens.is_some())?;
                tokens = Some(value.parse::<TokenMode>()?);
            }
            "--log-level" => {
                twice(log_level.is_some())?;
                let level = LOG_LEVELS
                    .iter()
                    .find(|(n, _)| *n == value)
                    .map(|(_, l)| *l)
                    .ok_or_else(|| {
                        format!("--log-level {value:?}: expected error, warn, info or debug")
                    })?;
                log_level = Some(level);
            }
            "--fault" => faults.push(value.parse::<FaultSpec>()?),
            "--control" => {
                twice(control.is_some())?;
                control = Some(PathBuf::from(value));
            }
            _ => devices.push(parse_device(&value)?),
        }
    }
    let socket = socket.ok_or("--socket PATH is required (see --help)")?;
    let fifos = fifos.unwrap_or(1);
    if devices.is_empty() {
        return Err("no --device given: the device needs at least one (see --help)".into());
    }
    for (i, d) in devices.iter().enumerate() {
        if d.fifo >= fifos {
            return Err(format!(
                "--device {}:{}: FIFO {} out of range (--fifos {fifos}: 0 to {})",
                d.fifo,
                d.num,
                d.fifo,
                fifos - 1
            ));
        }
        if d.num >= DEVICES_PER_FIFO {
            return Err(format!(
                "--device {}:{}: device number {} out of range (0 to {})",
                d.fifo,
                d.num,
                d.num,
                DEVICES_PER_FIFO - 1
            ));
        }
        if devices[..i]
            .iter()
            .any(|e| (e.fifo, e.num) == (d.fifo, d.num))
        {
            return Err(format!(
                "--device {}:{}: device number {} on FIFO {} given twice",
                d.fifo, d.num, d.num, d.fifo
            ));
        }
    }
    if let Some(f) = faults.iter().find(|f| f.fifo >= fifos) {
        return Err(format!(
            "--fault: FIFO {} out of range (--fifos {fifos})",
            f.fifo
        ));
    }
    Ok(Command::Run(Options {
        socket,
        fifos,
        mode: mode.unwrap_or(Mode::Compat),
        tokens: tokens.unwrap_or_default(),
        log_level: log_level.unwrap_or(log::LevelFilter::Info),
        devices,
        faults,
        control,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &str) -> Result<Options, String> {
        match parse(args.split_whitespace().map(String::from))? {
            Command::Run(o) => Ok(o),
            Command::Help => Err("help".into()),
        }
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
        // --help wins wherever it is.
        assert_eq!(
            parse(["--device".into(), "x".into(), "--help".into()]),
            Ok(Command::Help)
        );
        assert_eq!(parse(["-h".to_string()]), Ok(Command::Help));
    }

    #[test]
    fn mistakes_are_reported() {
        let cases = [
            ("--socket s --device 0:0:rng --bogus", "unknown option"),
            (
                "--socket s --device 0:0:rng --fifos",
                "--fifos needs a value",
            ),
            ("--socket s --device 0:0:rng --fifos 0", "expected 1 to 8"),
            ("--socket s --device 0:0:rng --fifos 9", "expected 1 to 8"),
            (
                "--socket s --device 0:0:rng --mode fast",
                "expected compat or strict",
            ),
            (
                "--socket s --device 0:0:rng --tokens echo",
                "expected model, zero or scramble",
            ),
            (
                "--socket s --device 0:0:rng --tokens zero --tokens model",
                "--tokens given twice",
            ),
            (
                "--socket s --device 0:0:rng --log-level loud",
                "expected error, warn",
            ),
            (
                "--socket s --socket t --device 0:0:rng",
                "--socket given twice",
            ),
            ("--device 0:0:rng", "--socket PATH is required"),
            ("--socket s", "no --device given"),
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
            .contains("the path exists"));
        let missing = dir.join("nope").join("s.sock");
        assert!(check_socket_path(&missing)
            .unwrap_err()
            .contains("does not exist"));
        assert!(check_socket_path(Path::new("")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
