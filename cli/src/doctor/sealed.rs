//! Sealed secrets (`Layout::Sealed`): what the limits allow, and the
//! library's sealed counters after the live check.

use std::fmt::{self, Formatter};

use securememory::system::{self, SystemReport};
use serde::Serialize;

use super::POOLED_LEN;
use crate::units::Bytes;

#[derive(Serialize)]
pub(super) struct Sealed {
    pub(super) secret_len: usize,
    /// Unlocked arena bytes per secret (ciphertext and tag in a slot).
    pub(super) arena_bytes_per_secret: Option<u64>,
    /// Ordinary (heap) bytes of each `Secret` value the program holds.
    pub(super) handle_bytes_per_secret: u64,
    /// Locked bytes the sealing key needs (one pool page), whatever the count.
    pub(super) locked_for_key: u64,
    /// Whether the key's page and one reading thread's scratch fit the limit.
    pub(super) fits_memlock: bool,
    /// Secrets physical memory would hold (`null`: unknown); the memlock
    /// limit does not bound them.
    pub(super) secrets_allowed_by_ram: Option<u64>,
    /// `stats()` after the live check.
    pub(super) in_use: u64,
    pub(super) arena_bytes: u64,
}

pub(super) fn sealed(r: &SystemReport) -> Sealed {
    let arena = system::sealed_arena_slot_size(POOLED_LEN).map(|b| b as u64);
    let handle = std::mem::size_of::<securememory::Secret>() as u64;
    let page = r.page_size as u64;
    let fits_memlock = r.lockable_bytes_left().is_none_or(|left| left >= page);
    let st = securememory::stats();
    Sealed {
        secret_len: POOLED_LEN,
        arena_bytes_per_secret: arena,
        handle_bytes_per_secret: handle,
        locked_for_key: page,
        fits_memlock,
        secrets_allowed_by_ram: system::physical_memory()
            .zip(arena)
            .map(|(ram, a)| ram / (a + handle)),
        in_use: st.sealed_in_use,
        arena_bytes: st.sealed_arena_bytes,
    }
}

pub(super) fn text(o: &mut Formatter<'_>, s: &Sealed) -> fmt::Result {
    writeln!(
        o,
        "Sealed secrets (Layout::Sealed): encrypted at rest in unlocked, no-dump, wipe-on-fork memory"
    )?;
    writeln!(
        o,
        "  locked memory: {} for the sealing key (one pool page) plus each reading thread's scratch, whatever the count: {}",
        Bytes(Some(s.locked_for_key)),
        if s.fits_memlock {
            "fits the limit"
        } else {
            "does NOT fit the limit"
        }
    )?;
    writeln!(
        o,
        "  each {}-byte secret takes {} of arena and {} bytes of Secret value, not locked: about {} fit in RAM (the memlock limit does not bound them)",
        s.secret_len,
        Bytes(s.arena_bytes_per_secret),
        s.handle_bytes_per_secret,
        s.secrets_allowed_by_ram
            .map_or_else(|| "?".to_string(), |n| n.to_string()),
    )?;
    writeln!(
        o,
        "  now: {} sealed secrets in use, {} of arena mapped",
        s.in_use,
        Bytes(Some(s.arena_bytes))
    )?;
    writeln!(o)
}
