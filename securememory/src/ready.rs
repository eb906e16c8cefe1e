//! [`release_ready_pages`]: give the store of ready pages back to the OS.

/// Unmap (and unlock) every ready page this process keeps for new one-page
/// secrets: pages of closed secrets, already wiped, kept locked and
/// `PROT_NONE` so that the next secret of the same backend and layout is
/// written into one instead of a new mapping (at most 64 per backend and
/// layout; [`stats`](crate::stats::stats)`().ready_pages` counts them). The
/// library gives them back by itself before the memlock budget would refuse
/// a request; call this to lower the process's locked memory now. Returns
/// how many pages were given back.
pub fn release_ready_pages() -> u64 {
    crate::mem::region::drain_ready()
}
