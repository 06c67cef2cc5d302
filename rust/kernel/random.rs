// SPDX-License-Identifier: GPL-2.0

//! Random numbers from the kernel's random number generator.
//!
//! C header: [`include/linux/random.h`](srctree/include/linux/random.h)

use crate::bindings;

/// A random `u32` from the kernel's cryptographically secure generator (`get_random_u32()`).
///
/// Any context. Before the generator is seeded the value is less random, as in C.
///
/// # Examples
///
/// ```
/// use kernel::random;
///
/// // Two draws are independent: 32 equal ones in a row would be a 2^-992 chance.
/// let first = random::get_u32();
/// assert!((0..32).any(|_| random::get_u32() != first));
/// ```
pub fn get_u32() -> u32 {
    // SAFETY: `get_random_u32()` has no preconditions.
    unsafe { bindings::get_random_u32() }
}

/// Fills `buf` with random bytes from the kernel's cryptographically secure generator
/// (`get_random_bytes()`).
///
/// Any context. Before the generator is seeded the bytes are less random, as in C.
///
/// # Examples
///
/// ```
/// use kernel::random;
///
/// let mut buf = [0u8; 64];
/// random::fill(&mut buf);
/// // 64 zero bytes would be a 2^-512 chance.
/// assert!(buf.iter().any(|&b| b != 0));
/// ```
pub fn fill(buf: &mut [u8]) {
    // SAFETY: `buf` is valid for writes of its length.
    unsafe { bindings::get_random_bytes(buf.as_mut_ptr().cast(), buf.len()) }
}
