// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The token of what the device sends (`--tokens`).
//!
//! The specification gives the token to the bus: a bus may insert or overwrite it, and a driver
//! must not rely on its value. QEMU's device model echoes the request's token in transport
//! responses and sends 0 in bus replies and events; a driver written against that alone can
//! still depend on echoes without noticing. The FIFO is the bus here, so it is where tokens
//! can be changed, for every message it puts on the device queue, to prove that a driver
//! matches replies without them.

use virtio_msg_wire::TYPE_RESPONSE;

/// Byte offset of the token in the header.
const TOKEN: usize = 4;

/// What happens to the token of every message the device sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenMode {
    /// As the device side set it, which is what the device model does: transport responses
    /// echo the request's token, bus replies and events carry 0.
    #[default]
    Model,
    /// Every message carries 0.
    Zero,
    /// Every response carries a token that is not the request's, different from message to
    /// message; events carry arbitrary values.
    Scramble,
}

/// Applies a [`TokenMode`] to outgoing messages.
#[derive(Clone, Debug, Default)]
pub struct Stamper {
    mode: TokenMode,
    /// Messages scrambled so far: what the next non-zero mask is drawn from.
    count: u32,
}

impl Stamper {
    /// A stamper for `mode`.
    pub fn new(mode: TokenMode) -> Self {
        Self { mode, count: 0 }
    }

    /// A value that is never 0 and changes from call to call (a counter run through a
    /// multiplicative hash, so consecutive values share no obvious pattern).
    fn mask(&mut self) -> u16 {
        loop {
            self.count = self.count.wrapping_add(1);
            let hashed = self.count.wrapping_mul(0x9e37_79b1);
            let mask = (hashed >> 16) as u16;
            if mask != 0 {
                return mask;
            }
        }
    }

    /// Sets the token of `msg` (a whole encoded message) that the device is about to send;
    /// `request_token` is the token of the request it answers (`None` for what nobody asked
    /// for: events).
    pub fn stamp(&mut self, msg: &mut [u8], request_token: Option<u16>) {
        let is_response = msg.first().is_some_and(|ty| ty & TYPE_RESPONSE != 0);
        let token = match self.mode {
            TokenMode::Model => return,
            TokenMode::Zero => 0,
            TokenMode::Scramble => match request_token {
                Some(req) if is_response => req ^ self.mask(),
                _ => self.mask(),
            },
        };
        if let Some(field) = msg.get_mut(TOKEN..TOKEN + 2) {
            field.copy_from_slice(&token.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(msg: &[u8]) -> u16 {
        u16::from_le_bytes([msg[4], msg[5]])
    }

    #[test]
    fn modes() {
        let response = [1u8, 7, 0, 0, 0x34, 0x12, 12, 0, 0, 0, 0, 0];
        let event = [0u8, 0x42, 0, 0, 0, 0, 12, 0, 0, 0, 0, 0];

        let mut model = Stamper::new(TokenMode::Model);
        let mut m = response;
        model.stamp(&mut m, Some(0x1234));
        assert_eq!(m, response);

        let mut zero = Stamper::new(TokenMode::Zero);
        zero.stamp(&mut m, Some(0x1234));
        assert_eq!(token(&m), 0);

        let mut scramble = Stamper::new(TokenMode::Scramble);
        let mut seen = std::collections::HashSet::new();
        for req in [0u16, 1, 0x1234, 0xffff].into_iter().cycle().take(4000) {
            let mut m = response;
            scramble.stamp(&mut m, Some(req));
            assert_ne!(
                token(&m),
                req,
                "a scrambled response never carries its request's token"
            );
            seen.insert(token(&m));
            let mut e = event;
            scramble.stamp(&mut e, None);
            seen.insert(token(&e));
        }
        assert!(seen.len() > 1000, "tokens vary: {} distinct", seen.len());

        // A message too short for a token is left alone.
        let mut short = [1u8, 2, 3];
        scramble.stamp(&mut short, Some(1));
        assert_eq!(short, [1, 2, 3]);
    }
}
