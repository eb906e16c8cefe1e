//! Where the bytes of a new secret come from, and how they are written into
//! protected memory. Below the factory and the pool, which both fill from it
//! (the pool used to import it from the factory above it).

use crate::mem::sys::fd::BorrowedFd;
use std::io::Read;

use crate::error::{Error, Result};
use crate::mem::{copy, sys};

/// Where the bytes of a new secret come from.
pub(crate) enum Source<'a> {
    Bytes(&'a [u8]),
    Random,
    Reader(&'a mut dyn Read),
    /// read(2) on a descriptor: no buffer in between.
    Fd(BorrowedFd<'a>),
}

impl Source<'_> {
    /// Write exactly `dst.len()` bytes into `dst` (protected memory: a new
    /// secret's pages or locked scratch). Every source but `Bytes` is a
    /// kernel copy (or the reader's own); `Bytes` is copied with no vector
    /// register and no `memcpy` (see [`copy`]).
    pub(crate) fn fill(&mut self, dst: &mut [u8]) -> Result<()> {
        match self {
            Source::Bytes(b) => {
                copy::copy(dst, b);
                Ok(())
            }
            Source::Random => sys::fill_random(dst).map_err(Error::RandomFailed),
            Source::Reader(r) => r.read_exact(dst).map_err(Error::ReadFailed),
            Source::Fd(fd) => sys::read_exact_fd(*fd, dst).map_err(Error::ReadFailed),
        }
    }
}
