//! How many secrets the limits allow: locked memory (RLIMIT_MEMLOCK) and
//! mappings (vm.max_map_count), for one-page, guarded and pooled secrets.

use securememory::system::{self, SystemReport};

use super::facts::running_as_root;
use super::findings::{Mappings, Memlock};
use super::POOLED_LEN;

/// The pool's full chunk and its slot for a `POOLED_LEN`-byte secret, in bytes.
fn pool_shape(page: u64) -> (u64, u64) {
    let chunk = (system::POOL_CHUNK_PAGES as u64) * page;
    let slot = system::pool_slot_size(POOLED_LEN).unwrap_or(POOLED_LEN) as u64;
    (chunk, slot)
}

/// Pooled secrets that fit in `usable` locked bytes: full chunks first,
/// then the pool's small chunks in what is left (as the pool itself does).
pub(super) fn pooled_in(usable: u64, page: u64) -> u64 {
    let (chunk, slot) = pool_shape(page);
    let small = (system::POOL_SMALL_CHUNK_PAGES as u64) * page;
    usable / chunk * (chunk / slot) + usable % chunk / small * (small / slot)
}

pub(super) fn memlock(r: &SystemReport) -> Memlock {
    let page = r.page_size as u64;
    let scratch = securememory::scratch_capacity() as u64;
    let (chunk, slot) = pool_shape(page);
    let usable = r.lockable_bytes_left();
    let limit_applies = usable.is_some();
    Memlock {
        soft: r.memlock_soft,
        hard: r.memlock_hard,
        limit_unknown: r.memlock_unknown,
        cap_ipc_lock: r.cap_ipc_lock,
        limit_applies,
        running_as_root: running_as_root(),
        scratch_bytes_per_thread: scratch,
        pool_chunk_bytes: chunk,
        pooled_secret_len: POOLED_LEN,
        pooled_slot_bytes: slot,
        one_page_secrets: r.one_page_secrets_allowed(),
        pooled_secrets: usable.map(|u| pooled_in(u, page)),
    }
}

/// `in_use`: the mappings this process has (see `facts::mappings_in_use`).
pub(super) fn mappings(r: &SystemReport, in_use: Option<u64>) -> Mappings {
    let (chunk, slot) = pool_shape(r.page_size as u64);
    let free = match (r.max_map_count, in_use) {
        (Some(max), Some(used)) => Some(max.saturating_sub(used)),
        _ => None,
    };
    Mappings {
        max_map_count: r.max_map_count,
        in_use,
        one_page_secrets: free,
        guarded_secrets: free.map(|f| f / 3),
        pooled_secrets: free.map(|f| f / 3 * (chunk / slot)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_count_uses_full_then_small_chunks() {
        let page = 4096;
        let (chunk, slot) = pool_shape(page);
        let per_small = (system::POOL_SMALL_CHUNK_PAGES as u64) * page / slot;
        assert_eq!(pooled_in(0, page), 0);
        assert_eq!(pooled_in(chunk, page), chunk / slot);
        assert_eq!(
            pooled_in(chunk + 2 * page, page),
            chunk / slot + 2 * per_small
        );
    }
}
