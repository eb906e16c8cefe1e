//! The sealing key of a sealed secret, for tests that look for it: written
//! by the test hook into a memory file (never mapped) and read back XOR a
//! mask, so that the test's own memory holds it only masked (mask 0: as
//! it is).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use securememory::test_hooks::write_sealing_key;
use securememory::Secret;

/// The 32-byte sealing key of `s`, each byte XOR `mask`.
pub fn sealing_key(s: &Secret, mask: u8) -> [u8; 32] {
    // SAFETY: a name and no flags; the descriptor is owned below.
    let fd = unsafe { libc::memfd_create(c"sealing-key".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    write_sealing_key(s, fd.as_raw_fd()).expect("write the key");
    let mut key = [0u8; 32];
    // SAFETY: `key` is writable for its length.
    let n = unsafe { libc::pread(fd.as_raw_fd(), key.as_mut_ptr().cast(), 32, 0) };
    assert_eq!(n, 32, "read the key back");
    for b in &mut key {
        *b ^= mask;
    }
    key
}
