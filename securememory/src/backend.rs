//! The public status of `memfd_secret` (the [`Backend`](crate::Backend)
//! enum itself lives in `options.rs`, the probe in `mem::probe`).
//!
//! Only "this kernel lacks it" is remembered for the life of the process
//! (`ENOSYS`, `EINVAL`, or `EPERM`/`EACCES` from a seccomp filter or a
//! security module, none of which go away while it runs). Success is not:
//! a filter installed later refuses the call from then on.
//! A refusal for lack of a resource (descriptors, mappings, address space,
//! the memlock limit) is reported as itself and the next call probes again.

use crate::error::Error;
use crate::mem::probe::memfd_secret_check;

/// Whether `memfd_secret` works in this process: `Ok`, or why not. A
/// refusal by the kernel or its filter is remembered; success is asked
/// again at each call (one `memfd_secret` call, as a filter may be installed
/// later), and a failure for lack of a resource is probed again.
pub fn memfd_secret_status() -> Result<(), String> {
    memfd_secret_check().map_err(|e| match e {
        Error::Unsupported(why) => why,
        e => e.to_string(),
    })
}
