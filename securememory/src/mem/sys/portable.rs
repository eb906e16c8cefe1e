//! What every system shares: randomness (through `getrandom`, which picks
//! the system's CSPRNG) and the shape of a resource limit.

use std::io;

use crate::mem::inject::{self, Op};

/// Fill `buf` from the operating system's CSPRNG (getrandom(2) on Linux,
/// `ProcessPrng` on Windows, through the `getrandom` crate).
pub(crate) fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    inject::check(Op::Random)?;
    getrandom::fill(buf).map_err(|e| match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::other(e.to_string()),
    })
}

/// A resource limit's soft and hard values; `None` means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit, the one the kernel enforces.
    pub soft: Option<u64>,
    /// The hard limit, the ceiling an unprivileged process may raise the soft limit to.
    pub hard: Option<u64>,
}
