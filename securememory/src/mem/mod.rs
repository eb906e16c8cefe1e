//! The lowest layer: the only code with `unsafe`. System calls (`sys`),
//! the copy and wipe of secret bytes (`copy`), owned mappings (`region`), memory protection keys (`pkey`), the per-thread scratch buffer (`scratch`), the fork sentinel (`sentinel`), values computed once that a fork child can finish (`once`),
//! the benchmark's kernel floor (`floor`) and fault injection for tests (`fault`).

pub(crate) mod copy;
pub(crate) mod fault;
pub(crate) mod floor;
pub(crate) mod once;
pub(crate) mod pkey;
pub(crate) mod region;
pub(crate) mod scratch;
pub(crate) mod sentinel;
pub(crate) mod stranded;
pub(crate) mod sys;
