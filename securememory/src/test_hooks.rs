//! Test-only observation and fault-injection points (feature `test-hooks`).
//! Never enable this feature in a program that holds real secrets: these
//! functions can read and damage protected memory.

use crate::secret::Secret;

pub use crate::lock_point::LockPoint;
pub use crate::mem::inject::Op as FaultOp;

/// Make the `skip`+1-th next call of `op` on this thread fail with `errno`.
pub fn fail_next(op: FaultOp, skip: u32, errno: i32) {
    crate::mem::inject::fail(op, skip, errno);
}

/// Cancel a planned failure on this thread.
pub fn clear_faults() {
    crate::mem::inject::clear();
}

/// Address of the secret's first byte in its protected mapping.
pub fn data_address(s: &Secret) -> usize {
    s.storage().data_address()
}

/// Address and length of the secret's data pages (the whole mapping
/// excluding guard pages); for pooled secrets, the slot.
pub fn data_pages(s: &Secret) -> (usize, usize) {
    s.storage().data_pages(s.len())
}

/// Flip one byte of a guarded secret's canary.
pub fn corrupt_canary(s: &Secret) -> crate::error::Result<()> {
    s.storage().corrupt_canary()
}

/// The bytes of the last region or slot released on this thread, read
/// after the wipe and before the unmap; `None` if none since the last call.
pub fn take_last_wiped() -> Option<Vec<u8>> {
    crate::mem::observe::take_wiped()
}

/// Whether releases on this thread record what [`take_last_wiped`] returns
/// (on by default). The record is a heap copy: tests that count the
/// library's allocations turn it off.
pub fn observe_wipes(on: bool) {
    crate::mem::observe::set_enabled(on);
}

/// The raw descriptor of the process-wide memory file, if open.
pub fn store_fd() -> Option<i32> {
    crate::mem::memfile::raw_fd_for_tests()
}

/// Run `f` right after every copy of secret bytes the library makes in user
/// space (into a caller's buffer, a new secret's pages, a keyed slot), in
/// the copying thread; `None` removes it. For tests of what a copy leaves
/// behind in CPU registers: `f` can end the process on the spot.
pub fn after_secret_copy(f: Option<fn()>) {
    crate::mem::copy::set_after_copy(f);
}

/// The data pages of this thread's scratch regions, as (address, length),
/// outermost first: one for the thread's life once it has read through the
/// copy path, more only while nested accesses need them.
pub fn scratch_regions() -> Vec<(usize, usize)> {
    crate::mem::scratch::regions()
}

/// Run `f` at each point where the library holds a lock ([`LockPoint`]),
/// in the thread holding it, from now on; `None` removes it. For tests
/// that park a thread there, or raise a signal there.
pub fn at_lock(f: Option<fn(LockPoint)>) {
    crate::lock_point::set(f);
}

/// From now on keep what every release on this thread wiped (see
/// [`take_last_wiped`]), not only the last, until [`take_all_wiped`].
pub fn collect_wipes() {
    crate::mem::observe::collect_all();
}

/// Every wipe recorded on this thread since [`collect_wipes`].
pub fn take_all_wiped() -> Vec<Vec<u8>> {
    crate::mem::observe::take_all()
}

/// A sealed secret's ciphertext and tag in the arena, as (address,
/// length); `None` for other layouts.
pub fn sealed_ciphertext(s: &Secret) -> Option<(usize, usize)> {
    s.storage().sealed_ciphertext()
}

/// Flip the bits of `xor` in byte `at` of a sealed secret's ciphertext and
/// tag (`at` below the secret's length is ciphertext, the 16 after it the
/// tag). Call with no access of the secret in flight.
pub fn tamper_sealed(s: &Secret, at: usize, xor: u8) -> crate::error::Result<()> {
    s.storage().tamper_sealed(at, xor)
}

/// Write the key a sealed secret is sealed under to the file `fd` at
/// offset 0 (a kernel copy from this thread's scratch, wiped after), so a
/// test can look for it where it must not be.
pub fn write_sealing_key(s: &Secret, fd: std::os::fd::RawFd) -> crate::error::Result<()> {
    s.storage().write_sealing_key(fd)
}

/// Register `hook` as a fork child hook (run in every fork child, before
/// its code uses the library; see `mem/fork.rs`), as the library's own
/// are. Registering it again does nothing; past the room for hooks, this
/// panics.
pub fn on_fork_child(hook: fn(u64)) {
    crate::mem::fork::on_child(hook);
}

/// Keep the pages of closed one-page secrets ready for the next ones (on,
/// the default) or unmap each at its close (off; turning it off gives the
/// ready pages back now). For tests of the mapping path itself: injected
/// failures of a new mapping, or figures that must come back to their start
/// after every close.
pub fn keep_ready_pages(on: bool) {
    crate::mem::region::keep_ready_pages(on);
}
