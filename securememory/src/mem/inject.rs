//! Fault injection for tests: make the next call of one system call on this
//! thread fail with a chosen `errno`. Compiled to nothing without the
//! `test-hooks` feature.

use std::io;

/// The system calls a test can make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `mmap`
    Mmap,
    /// `mlock`
    Mlock,
    /// `mprotect` to a readable or writable protection.
    ProtectRead,
    /// `mprotect` back to `PROT_NONE`.
    ProtectNone,
    /// `madvise`
    Madvise,
    /// `memfd_create`
    MemfdCreate,
    /// `memfd_secret`
    MemfdSecret,
    /// `ftruncate`
    Ftruncate,
    /// `pread`
    Pread,
    /// `pwrite`
    Pwrite,
    /// `getrandom`
    Random,
    /// `pkey_mprotect`
    PkeyMprotect,
}

#[cfg(feature = "test-hooks")]
mod imp {
    use super::Op;
    use std::cell::Cell;
    use std::io;

    thread_local! {
        // (operation, calls of it to let through first, errno)
        static PLAN: Cell<Option<(Op, u32, i32)>> = const { Cell::new(None) };
    }

    pub(crate) fn fail(op: Op, skip: u32, errno: i32) {
        PLAN.with(|p| p.set(Some((op, skip, errno))));
    }

    pub(crate) fn clear() {
        PLAN.with(|p| p.set(None));
    }

    #[inline]
    pub(crate) fn check(op: Op) -> io::Result<()> {
        PLAN.with(|p| match p.get() {
            Some((o, 0, errno)) if o == op => {
                p.set(None);
                Err(io::Error::from_raw_os_error(errno))
            }
            Some((o, n, errno)) if o == op => {
                p.set(Some((o, n - 1, errno)));
                Ok(())
            }
            _ => Ok(()),
        })
    }
}

#[cfg(feature = "test-hooks")]
pub(crate) use imp::{clear, fail};

#[inline(always)]
pub(crate) fn check(_op: Op) -> io::Result<()> {
    #[cfg(feature = "test-hooks")]
    {
        imp::check(_op)
    }
    #[cfg(not(feature = "test-hooks"))]
    {
        Ok(())
    }
}
