//! Which per-process limit a refusal of the kernel stands for, so that each
//! error names its real cause: `ENOMEM` from `mmap`, `mlock` or `munmap` is
//! the map count (`vm.max_map_count`), the address space (`RLIMIT_AS`) or
//! real memory; `EMFILE`/`ENFILE` are descriptors. The memlock limit answers
//! `EAGAIN` at `mmap` (and `ENOMEM`/`EPERM` at `mlock`); the budget handles it.
//!
//! Reading `/proc/self/maps` here must not need a mapping of its own (the
//! process may have none left): it is read through a fixed buffer on the
//! stack, never into a growing `String`.

use std::io::{self, Read};

use super::sys;
use crate::error::{Error, ProcessLimit};

/// Mappings a request may add: a fixed mapping in the middle of a guarded
/// reservation splits it in three (two more).
const MAPPINGS_A_REQUEST_ADDS: u64 = 2;

/// The number of mappings of this process and the bytes they span, from
/// `/proc/self/maps`; `None` if it cannot be read (`/proc` hidden).
fn mappings() -> Option<(u64, u64)> {
    let mut file = std::fs::File::open("/proc/self/maps").ok()?;
    let mut buf = [0u8; 4096];
    // The `start-end` field at the head of the current line.
    let mut head = [0u8; 48];
    let (mut head_len, mut at_head) = (0usize, true);
    let (mut count, mut bytes) = (0u64, 0u64);
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                count += 1;
                bytes += span(&head[..head_len]).unwrap_or(0);
                (head_len, at_head) = (0, true);
            } else if at_head {
                if b == b' ' || head_len == head.len() {
                    at_head = false;
                } else {
                    head[head_len] = b;
                    head_len += 1;
                }
            }
        }
    }
    Some((count, bytes))
}

/// The length of a `start-end` range in hexadecimal.
fn span(range: &[u8]) -> Option<u64> {
    let range = std::str::from_utf8(range).ok()?;
    let (lo, hi) = range.split_once('-')?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    hi.checked_sub(lo)
}

/// `/proc/sys/vm/max_map_count`, read without a growing buffer.
fn max_map_count() -> Option<u64> {
    let mut file = std::fs::File::open("/proc/sys/vm/max_map_count").ok()?;
    let mut buf = [0u8; 32];
    let n = file.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// The limit that explains an `ENOMEM` for a request of `bytes` bytes, if
/// one does: the map count when the process is within a request of
/// `vm.max_map_count`, else the address space when `bytes` more would pass
/// `RLIMIT_AS`. `None` when neither does (real memory) or `/proc` is hidden.
pub(crate) fn explain_enomem(bytes: usize) -> Option<ProcessLimit> {
    let (count, mapped) = mappings()?;
    if let Some(max) = max_map_count() {
        if count + MAPPINGS_A_REQUEST_ADDS >= max {
            return Some(ProcessLimit::MapCount {
                mappings: count,
                max,
            });
        }
    }
    let soft = sys::address_space_limit().ok()?.soft?;
    (mapped.saturating_add(bytes as u64) > soft)
        .then_some(ProcessLimit::AddressSpace { mapped, soft })
}

/// The limit that explains `e`, if one does: descriptors for `EMFILE` and
/// `ENFILE`, [`explain_enomem`] for `ENOMEM`.
pub(crate) fn explain(bytes: usize, e: &io::Error) -> Option<ProcessLimit> {
    match e.raw_os_error() {
        Some(libc::EMFILE) => Some(ProcessLimit::Descriptors {
            soft: sys::nofile_limit().ok().and_then(|l| l.soft),
        }),
        Some(libc::ENFILE) => Some(ProcessLimit::SystemDescriptors),
        Some(libc::ENOMEM) => explain_enomem(bytes),
        _ => None,
    }
}

/// The error for a refused mapping of `bytes` bytes: [`Error::LimitReached`]
/// naming the limit when one explains it, else [`Error::MapFailed`].
pub(crate) fn map_error(bytes: usize, source: io::Error) -> Error {
    match explain(bytes, &source) {
        Some(limit) => Error::LimitReached {
            bytes,
            limit,
            source,
        },
        None => Error::MapFailed { bytes, source },
    }
}

/// The error for a refused `munmap` of `bytes` bytes.
pub(crate) fn unmap_error(bytes: usize, source: io::Error) -> Error {
    // Unmapping needs no address space: only the map count can explain it.
    let limit = match source.raw_os_error() {
        Some(libc::ENOMEM) => {
            explain_enomem(0).filter(|l| matches!(l, ProcessLimit::MapCount { .. }))
        }
        _ => None,
    };
    Error::UnmapFailed {
        bytes,
        limit,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_this_process_mappings() {
        let (count, bytes) = mappings().expect("/proc/self/maps");
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        // Mappings may change between the two reads (allocator): close enough.
        let lines = text.lines().count() as u64;
        assert!(count.abs_diff(lines) <= 4, "{count} vs {lines}");
        assert!(bytes > 0);
    }

    #[test]
    fn span_parses_a_range() {
        assert_eq!(span(b"1000-3000"), Some(0x2000));
        assert_eq!(span(b"nonsense"), None);
    }
}
