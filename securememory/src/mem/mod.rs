//! The lowest layer: the only code with `unsafe`. System calls (`sys`), the
//! ciphertext arena of sealed secrets (`arena`), what a cipher call leaves
//! on the stack and in vector registers, cleared (`residue`),
//! the copy and wipe of secret bytes (`copy`), owned mappings (`region`) and their release at most once (`release_once`), memory protection keys (`pkey`), the per-thread scratch buffer (`scratch`), the fork sentinel (`sentinel`), values computed once that a fork child can finish (`once`),
//! the benchmark's kernel floor (`floor`), fault injection for tests (`inject`) and the record of what was wiped, read by the test hooks (`observe`).

pub(crate) mod arena;
pub(crate) mod budget;
pub(crate) mod copy;
pub(crate) mod floor;
pub(crate) mod fork;
pub(crate) mod inject;
pub(crate) mod limits;
pub(crate) mod memfile;
#[cfg(feature = "test-hooks")]
pub(crate) mod observe;
pub(crate) mod once;
pub(crate) mod pkey;
pub(crate) mod probe;
pub(crate) mod region;
pub(crate) mod registry;
pub(crate) mod release_once;
pub(crate) mod residue;
pub(crate) mod scratch;
pub(crate) mod sentinel;
#[cfg(unix)]
pub(crate) mod signal;
/// Windows has no POSIX signals: no handler; the panic hook's in-place wipe.
#[cfg(windows)]
pub(crate) mod signal {
    /// Run the signal path's wipe outside a handler (the panic hook).
    pub(crate) fn wipe_all_blocked() -> usize {
        super::registry::wipe_all()
    }
}
pub(crate) mod stranded;
pub(crate) mod sys;
