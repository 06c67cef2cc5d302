// SPDX-License-Identifier: GPL-2.0 OR MIT

//! A minimal logger for the `log` facade (ours and the vfio-user crate's messages): one line
//! per record on stderr, with the time since start, so that a test's emulator log can be read
//! next to the guest's serial log.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

struct Logger;

static START: OnceLock<Instant> = OnceLock::new();
static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
        let target = record.target();
        let target = target
            .strip_prefix("virtio_msg_emulator::")
            .unwrap_or(target);
        // A closed stderr is no reason to stop the device.
        let _ = writeln!(
            std::io::stderr().lock(),
            "[{t:10.3}] {:<5} {target}: {}",
            record.level(),
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Sends log records up to `level` to stderr.
pub fn init(level: log::LevelFilter) {
    START.get_or_init(Instant::now);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
