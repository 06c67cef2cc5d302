// SPDX-License-Identifier: GPL-2.0

//! A rate limit for the warnings a device can cause at will.
//!
//! A hostile or broken device decides how often it answers with nonsense, churns its
//! configuration or names a bad region; each is worth a warning, but not one per message,
//! which would let the device flood the kernel log. The Rust side of 7.2 has no
//! `dev_warn_ratelimited!`; this is the part of `___ratelimit()` the transport needs: at most
//! one message per [`INTERVAL_MS`], the others counted and reported with the next one.

use kernel::{
    sync::atomic::{Atomic, Relaxed},
    time::{Instant, Monotonic},
};

/// At most one message per this many milliseconds.
pub(crate) const INTERVAL_MS: i64 = 5000;

/// One rate limit (per device: a device cannot silence another's warnings).
pub(crate) struct RateLimit {
    start: Instant<Monotonic>,
    /// Milliseconds after `start` from which the next message may go out.
    next_ms: Atomic<i64>,
    /// Messages suppressed since the last one that went out.
    suppressed: Atomic<u32>,
}

impl RateLimit {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            next_ms: Atomic::new(0),
            suppressed: Atomic::new(0),
        }
    }

    /// Whether a message may go out now; if so, how many were suppressed before it. Any
    /// context.
    pub(crate) fn allow(&self) -> Option<u32> {
        let now = self.start.elapsed().as_millis();
        let next = self.next_ms.load(Relaxed);
        if now < next
            || self
                .next_ms
                .cmpxchg(next, now + INTERVAL_MS, Relaxed)
                .is_err()
        {
            self.suppressed.add(1, Relaxed);
            return None;
        }
        Some(self.suppressed.xchg(0, Relaxed))
    }
}

/// Shows the count [`RateLimit::allow`] returned at the end of a message: nothing if none
/// was suppressed.
pub(crate) struct Suppressed(pub(crate) u32);

impl kernel::fmt::Display for Suppressed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} earlier warnings of the device suppressed)"),
        }
    }
}
