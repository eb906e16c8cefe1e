//! A `memfd_secret` file of the region's own, mapped shared and
//! `MADV_DONTFORK`; the kernel locks these pages itself (charging them to
//! `RLIMIT_MEMLOCK`) and removes them from its direct map. Read through a
//! window only; wiped in place at release. The descriptor is closed once
//! mapped: the mapping keeps the file alive.

use crate::mem::sys::fd::AsRawFd;

use super::{map_err, Region};
use crate::error::Error;
use crate::mem::budget;
use crate::mem::fork;
use crate::mem::sys::{self, Prot};

/// A refused `memfd_secret` file: a descriptor or memory limit is reported
/// as that limit (transient, retried next time); anything else means this
/// kernel or its filter does not allow the call.
fn memfd_secret_err(bytes: usize) -> impl FnOnce(std::io::Error) -> Error {
    move |e| match crate::mem::limits::explain(bytes, &e) {
        Some(limit) => Error::LimitReached {
            bytes,
            limit,
            source: e,
        },
        None => Error::Unsupported(format!("memfd_secret unavailable: {e}")),
    }
}

/// Make the file and map it over the data pages (inside the guard
/// reservation if there is one), read-write for filling.
pub(super) fn map(region: &mut Region, guard: bool) -> Result<(), Error> {
    let data_len = region.data_len;
    let at = guard.then_some(region.data);
    // The descriptor and the mapping exist only inside the fence.
    let fence = fork::fence();
    let fd = sys::memfd_secret().map_err(memfd_secret_err(data_len))?;
    sys::ftruncate(&fd, data_len as u64).map_err(map_err(data_len))?;
    // SAFETY: a fixed target is the data part of our own reservation.
    let mapped = unsafe { sys::mmap_shared(at, data_len, Prot::ReadWrite, fd.as_raw_fd(), 0) };
    let kept = match &mapped {
        Ok(p) => region.keep_from_fork(*p, guard),
        Err(_) => Ok(()),
    };
    // The mapping keeps the file alive; the descriptor is closed here.
    drop(fd);
    drop(fence);
    match mapped {
        Ok(_) => kept,
        // The kernel charges these pages to RLIMIT_MEMLOCK at mmap and
        // answers EAGAIN past it; ENOMEM is another limit.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EPERM)) => {
            region.uncount();
            Err(budget::lock_error(data_len as u64, e))
        }
        Err(e) => Err(map_err(data_len)(e)),
    }
}
