//! Secrets (keys, passwords, tokens) in memory that is never swapped, never
//! written to a core dump, unreadable outside an explicit access window, not
//! inherited by a fork child, and wiped when closed. The job of the
//! `securememory` package of GoDaddy's Asherah, in Rust.
//!
//! ```
//! use securememory::{ProtectedFactory, SecretFactory};
//!
//! let factory = ProtectedFactory::default();
//! let mut key = *b"0123456789abcdef0123456789abcdef";
//! let secret = factory.new(&mut key)?;          // `key` is wiped
//! assert_eq!(key, [0u8; 32]);
//! let first = secret.with_bytes(|bytes| bytes[0])?;
//! assert_eq!(first, b'0');
//! secret.close()?;                               // wiped, unlocked, unmapped
//! assert!(matches!(secret.with_bytes(|_| ()), Err(securememory::Error::Closed)));
//! # Ok::<(), securememory::Error>(())
//! ```
//!
//! Linux only: on any other target the crate does not compile.

#![warn(missing_docs)]
// `unsafe` lives in `mem` alone (the lowest layer); every block there says
// why it is sound, one unsafe operation per block (CI denies warnings).
#![deny(unsafe_code)]
#![warn(
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]

mod access;
#[cfg(all(test, loom))]
mod access_loom;
mod backend;
mod error;
mod factory;
mod hazard;
#[cfg(feature = "test-hooks")]
mod lock_point;
#[allow(unsafe_code)]
mod mem;
mod metrics;
mod options;
mod pool;
mod pool_protection;
mod purge;
mod ready;
mod resolve;
mod secret;
mod shard;
mod shield;
mod source;
mod stats;
mod storage;
mod sync;
pub mod system;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;

pub use backend::memfd_secret_status;
pub use error::{Error, MemlockReport, ProcessLimit, Result};
pub use factory::{disable_core_dumps, ProtectedFactory, SecretFactory};
pub use metrics::Stats;
pub use options::{AccessPath, Backend, CoreDumps, Layout, LockPolicy, Options, PoolProtection};
pub use pool::MAX_SLOT as POOL_MAX_SLOT;
pub use pool_protection::{keys_resist_speculation, protection_keys_status};
pub use purge::{
    purge, purge_and_exit, purge_on_panic, purge_on_signals, purges_on_signal,
    DEFAULT_PURGE_SIGNALS,
};
pub use ready::release_ready_pages;
pub use secret::{scratch_capacity, Secret, SecretReader};
pub use stats::stats;

/// The largest secret [`Layout::Sealed`] holds, in bytes.
pub const SEALED_MAX_LEN: usize = storage::SEALED_MAX_LEN;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
