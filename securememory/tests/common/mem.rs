//! Plain memory of the test's own, and byte searches: the mappings a test
//! maps or locks beside the library's, and the scans that look for a secret.

use std::ffi::c_void;

/// A fresh private anonymous read-write mapping of `len` bytes (never
/// unmapped by this module).
pub fn anon_rw(len: usize) -> *mut c_void {
    // SAFETY: a fresh private anonymous mapping at an address the kernel
    // picks; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p
}

/// `len` bytes of locked memory of the test's own (the host program's
/// locked memory, counted against the same `RLIMIT_MEMLOCK`).
pub fn lock_own(len: usize) -> *mut c_void {
    let own = anon_rw(len);
    // SAFETY: the mapping just made, `len` bytes long.
    assert_eq!(unsafe { libc::mlock(own, len) }, 0, "mlock");
    own
}

/// Whether `needle` occurs in `hay` (glibc's memmem: the tests run
/// unoptimised, the scan must not).
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    // SAFETY: memmem reads only within the two slices, given with their lengths.
    let p = unsafe {
        libc::memmem(
            hay.as_ptr() as *const c_void,
            hay.len(),
            needle.as_ptr() as *const c_void,
            needle.len(),
        )
    };
    !p.is_null()
}

/// Lowercase hex, two digits a byte (how a secret is passed to a child).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
