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
