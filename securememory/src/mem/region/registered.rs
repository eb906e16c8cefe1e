//! A region's entry in the purge registry (`mem/registry.rs`): a signal's
//! purge finds the data pages there, punches the memory file's range out or
//! replaces other pages with fresh zero pages.

use super::{Mapped, Region};
use crate::mem::registry::{self, Ticket, Wipe};

impl Region {
    /// Enter the data pages in the purge registry, once mapped.
    pub(super) fn register(&self) -> Ticket {
        // Not `file_fd()`: its error allocates, and a scratch region is made
        // on the access path (nested accesses).
        let file = match &self.backing {
            Mapped::MemoryFile(range) => range.file.fd().ok().map(|fd| (fd, range.off)),
            _ => None,
        };
        let wipe = if file.is_some() {
            Wipe::Punch
        } else {
            Wipe::Replace
        };
        registry::register(wipe, self.data as usize, self.data_len, file, self.fork_gen)
    }

    /// Leave the purge registry, before anything is unmapped.
    pub(super) fn unregister(&self) {
        if let Some(t) = &self.ticket {
            registry::unregister(t);
        }
    }
}
