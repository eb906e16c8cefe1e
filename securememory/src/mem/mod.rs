//! The lowest layer: the only code with `unsafe`. System calls (`sys`),
//! the copy and wipe of secret bytes (`copy`), owned mappings (`region`) and their release at most once (`release_once`), memory protection keys (`pkey`), the per-thread scratch buffer (`scratch`), the fork sentinel (`sentinel`), values computed once that a fork child can finish (`once`),
//! the benchmark's kernel floor (`floor`), fault injection for tests (`inject`) and the record of what was wiped, read by the test hooks (`observe`).

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
pub(crate) mod release_once;
pub(crate) mod scratch;
pub(crate) mod sentinel;
pub(crate) mod stranded;
pub(crate) mod sys;
