//! The public [`Secret`] type: access, close, drop; and its reader
//! ([`SecretReader`], in `reader.rs`): a pair that names each other, so one
//! module.

use std::fmt;
use std::sync::Arc;

use crate::access::Gate;
use crate::error::{Error, Result};
use crate::mem::copy;
use crate::mem::fork;
use crate::mem::registry;
use crate::mem::scratch;
use crate::options::{AccessPath, LockPolicy};
use crate::storage::Storage;

mod active;
mod close;
mod reader;
pub(crate) use active::inside_access;
use active::Active;
use close::Settle;
pub use reader::SecretReader;

/// Where a copy-path access puts the bytes (see `Secret::copies`).
#[derive(Clone, Copy)]
enum Through {
    /// This thread's scratch buffer, for the closure of `with_bytes`.
    Scratch,
    /// The caller's buffer (`read_at`, the reader's primitive).
    CallersBuffer,
}

/// A secret held in protected memory. Create one with a
/// [`SecretFactory`](crate::SecretFactory).
///
/// The bytes are readable only inside [`with_bytes`](Secret::with_bytes)
/// (and the other access methods); at rest no thread can read them through
/// any user-space mapping (`PROT_NONE` pages, or for a pool with
/// [`PoolProtection::ProtectionKey`](crate::PoolProtection), a key no thread
/// has open unless the program itself opened keys in that thread). `Secret` is `Send + Sync`: many threads may access one secret
/// at once. Dropping it closes it.
pub struct Secret {
    // Shared with the purge's list of live secrets (`purge/live.rs`), which
    // holds weak references: a purge closes the secret through them.
    gate: Arc<Gate>,
    storage: Arc<Storage>,
    len: usize,
    path: AccessPath,
    backend: crate::options::Backend,
    /// The factory's lock policy, which the copy path's scratch follows too.
    lock: LockPolicy,
    fork_gen: u64,
    /// The purge epoch when the creation began: a later purge purged it.
    epoch: u64,
}

impl Secret {
    pub(crate) fn new(
        storage: Storage,
        len: usize,
        path: AccessPath,
        backend: crate::options::Backend,
        lock: LockPolicy,
        epoch: u64,
    ) -> Secret {
        let (gate, storage) = (Arc::new(Gate::new()), Arc::new(storage));
        crate::storage::live::register(&gate, &storage, epoch);
        Secret {
            gate,
            epoch,
            len,
            path,
            backend,
            lock,
            // The storage's generation, not now: a fork from user code
            // called during the creation (a metrics recorder, a `tracing`
            // subscriber) goes on in the child, where this storage is the
            // parent's (not mapped, or zeroed).
            fork_gen: storage.fork_gen(),
            storage,
        }
    }

    /// The secret's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a secret has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The access path this secret's accesses take (never `Auto`).
    pub fn access_path(&self) -> AccessPath {
        self.path
    }

    /// The memory backing this secret (never `Auto`).
    pub fn backend(&self) -> crate::options::Backend {
        self.backend
    }

    /// Whether any user-space mapping of this secret's bytes is readable by
    /// the calling thread right now: its permissions in `/proc/self/smaps`,
    /// and for pages tagged with a protection key, whether this thread's
    /// PKRU opens the key. At rest (no access in flight) this is `false`;
    /// the benchmark checks it after every row. For a closed secret, `false`.
    /// For a sealed secret ([`Layout::Sealed`](crate::Layout::Sealed)) the
    /// range checked is its sealing key's slot: its plaintext is in no
    /// mapping at rest, and its ciphertext is readable by design.
    ///
    /// On Windows the pages' protection as `VirtualQuery` reports it.
    ///
    /// # Errors
    /// When `/proc/self/smaps` cannot be read; on macOS and FreeBSD always
    /// (`ErrorKind::Unsupported`: no page-table reader there yet).
    pub fn is_readable_now(&self) -> std::io::Result<bool> {
        if self.is_closed() {
            return Ok(false);
        }
        let (start, len) = self.storage.data_pages(self.len);
        crate::system::range_readable(start, start + len)
    }

    /// Whether [`close`](Secret::close) has been called (or has begun).
    pub fn is_closed(&self) -> bool {
        self.gate.is_closed() || self.purged()
    }

    /// Whether a purge began after this secret's creation began.
    #[inline]
    fn purged(&self) -> bool {
        registry::epoch() != self.epoch
    }

    /// A closed gate's error is [`Error::Purged`] once purged.
    fn explain(&self, e: Error) -> Error {
        match e {
            Error::Closed if self.purged() => Error::Purged,
            e => e,
        }
    }

    /// Run `action` on the secret's bytes and return what it returns.
    ///
    /// The bytes are readable only for the duration of the call; on return
    /// (or if `action` panics) the access ends, and the secret stays usable.
    /// Nested accesses to the same or other secrets are fine.
    ///
    /// # Errors
    /// [`Error::Closed`] after close, [`Error::Purged`] after a
    /// [`purge`](crate::purge), [`Error::Forked`] in a fork child,
    /// [`Error::NestingTooDeep`] past 32 nested accesses on one thread,
    /// [`Error::LockFailed`] on the copy path when this thread's scratch
    /// buffer cannot be locked (unless the factory allows unlocked memory;
    /// tried again on the next access), and the rare failures of the kernel
    /// copy or of a protection change.
    ///
    /// ```
    /// use securememory::{ProtectedFactory, SecretFactory};
    /// let factory = ProtectedFactory::default();
    /// let secret = factory.new(&mut *b"hunter2".to_vec())?;
    /// let n = secret.with_bytes(|b| b.len())?;
    /// assert_eq!(n, 7);
    /// # Ok::<(), securememory::Error>(())
    /// ```
    #[inline]
    pub fn with_bytes<R>(&self, action: impl FnOnce(&[u8]) -> R) -> Result<R> {
        if self.fork_gen != fork::generation() {
            return Err(Error::Forked);
        }
        if self.purged() {
            return Err(Error::Purged);
        }
        // Dropped last (on unwind too), once this access has left the gate.
        let _settle = Settle(self);
        let _active = Active::push(&self.gate)?;
        let r = if self.copies(Through::Scratch) {
            self.with_copy(action)
        } else {
            self.with_window(action)
        };
        r.map_err(|e| self.explain(e))
    }

    /// Copy, else window: the one place that decides how an access reaches
    /// the bytes. The copy path copies; through this thread's scratch it
    /// needs the secret to fit there (a larger one takes the window), into
    /// the caller's own buffer it always can.
    #[inline]
    fn copies(&self, to: Through) -> bool {
        self.path == AccessPath::Copy
            && match to {
                Through::Scratch => self.len <= scratch::capacity(),
                Through::CallersBuffer => true,
            }
    }

    /// The copy path: the kernel copies the secret into a reservation of
    /// this thread's scratch, the closure runs on it, the reservation is
    /// wiped (on unwind too). No lock is held while `f` runs. A scratch that
    /// cannot be had is an error, never a silent switch to the window.
    #[inline]
    fn with_copy<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let w = self.storage.window();
        let entered = self.gate.enter(&w)?;
        let mut buf = scratch::reserve(self.len, self.storage.placement(), self.lock)?;
        self.storage.copy_out(0, &mut buf)?;
        // A signal's purge does not wait: bytes copied while it wiped may be
        // torn. Checked after the copy, so `f` sees them whole or not at all
        // (the scratch is wiped as `buf` drops).
        if self.purged() {
            return Err(Error::Purged);
        }
        let r = f(&buf);
        drop(buf);
        entered.finish()?;
        Ok(r)
    }

    fn with_window<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let Some(w) = self.storage.pages_window() else {
            // Pooled secrets fit the scratch and always take the copy path.
            return Err(Error::Unsupported("pooled secrets have no window".into()));
        };
        let entered = self.gate.enter_window(&w)?;
        // The recorder told of the protection change (user code, called
        // once the window is open) may have forked: in that child the pages
        // are the parent's, zeroed or unmapped; never show them.
        if fork::generation() != self.fork_gen {
            return Err(Error::Forked);
        }
        let r = f(w.view(self.len, &entered));
        entered.finish()?;
        Ok(r)
    }

    /// Asherah Go's `WithBytesFunc`: run a fallible `action` on the bytes and
    /// return its result; the library's own errors convert into `E`.
    ///
    /// ```
    /// use securememory::{ProtectedFactory, SecretFactory, Error};
    /// let secret = ProtectedFactory::default().new(&mut [1, 2, 3])?;
    /// let sum: u32 = secret.with_bytes_func(|b| Ok::<_, Error>(b.iter().map(|&x| x as u32).sum()))?;
    /// assert_eq!(sum, 6);
    /// # Ok::<(), Error>(())
    /// ```
    #[inline]
    pub fn with_bytes_func<T, E: From<Error>>(
        &self,
        action: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<T, E> {
        self.with_bytes(action)?
    }

    /// A reader over the secret: every `read` call is one access. See
    /// [`SecretReader`].
    pub fn reader(&self) -> SecretReader<'_> {
        SecretReader::new(self)
    }

    /// Copy `[pos, pos + buf.len())` of the secret into `buf` as one access
    /// (the reader's primitive). Returns the bytes copied.
    pub(crate) fn read_at(&self, pos: usize, buf: &mut [u8]) -> Result<usize> {
        if self.fork_gen != fork::generation() {
            return Err(Error::Forked);
        }
        if self.purged() {
            return Err(Error::Purged);
        }
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let _settle = Settle(self);
        let n = buf.len().min(self.len.saturating_sub(pos));
        if n == 0 {
            return Ok(0);
        }
        let dst = &mut buf[..n];
        if self.copies(Through::CallersBuffer) {
            // The caller's buffer is the destination: no scratch, no window.
            let w = self.storage.window();
            let entered = self.gate.enter(&w).map_err(|e| self.explain(e))?;
            self.storage.copy_out(pos, dst)?;
            if self.purged() {
                // As in `with_copy`: whole bytes or none.
                zeroize::Zeroize::zeroize(dst);
                return Err(Error::Purged);
            }
            entered.finish()?;
        } else {
            let _active = Active::push(&self.gate)?;
            // No `memcpy`: it would leave the bytes in vector registers.
            self.with_window(|b| copy::copy(dst, &b[pos..pos + n]))
                .map_err(|e| self.explain(e))?;
        }
        Ok(n)
    }

    #[cfg(feature = "test-hooks")]
    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("len", &self.len)
            .field("closed", &self.is_closed())
            .field("backend", &self.backend)
            .field("access_path", &self.path)
            .finish_non_exhaustive()
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Secret>();
}

/// The number of bytes of each thread's scratch buffer (the largest secret
/// the copy path reads without falling back to the window).
pub fn scratch_capacity() -> usize {
    scratch::capacity()
}
