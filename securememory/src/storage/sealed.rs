//! The sealed layout (`Layout::Sealed`): each secret is kept encrypted
//! with AES-256-GCM in the unlocked ciphertext arena (`mem::arena`),
//! under a sealing key that lives in a locked pool slot.
//!
//! ```text
//!   locked pool slot (PROT_NONE, or a protection key)   arena slot (unlocked,
//!   +----------------------+                            no-dump, wipe-on-fork)
//!   | sealing key, 32 B    |  one per fork generation   +---------------------+
//!   +----------------------+  (and per key protection)  | ciphertext | tag 16 |
//!              |                                        +---------------------+
//!              | kernel (or keyed) copy, per access                |
//!              v                                                   v
//!   this thread's scratch (locked, no-dump, wipe-on-fork, wiped on return):
//!   [ plaintext, len B ]  [ key, 32 B ]  -> AEAD open in place -> closure
//! ```
//!
//! Plaintext exists only in the accessing thread's scratch buffer, during
//! an access (or a creation), and the key only there and in the cipher's
//! own structures on that thread's stack for one AEAD call (zeroized by the
//! crates on drop; the stack below and the vector registers are cleared by
//! `mem::residue` after every call).
//!
//! Nonces: a key is made from the CSPRNG for each fork generation and
//! never leaves its process (its slot is not in fork children, and every
//! use checks the generation first). Each secret sealed under a key takes
//! the next value of the key's 64-bit counter as its nonce (zero-padded to
//! 96 bits), so no nonce repeats under one key: a secret is sealed once,
//! never re-sealed, and the counter cannot wrap (creation fails first).
//! The nonce is the secret's id: kept beside the arena slot (not in it) and
//! authenticated with the length as associated data, so a ciphertext moved
//! or copied into another secret's slot fails to open.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInPlace, KeyInit, Nonce, Tag};
use aes_gcm::aes::Aes256Enc;
use aes_gcm::{AesGcm, Key};
use zeroize::Zeroize;

use crate::error::{Error, Result};
use crate::mem::arena::{self, ArenaSlot};
use crate::mem::fork;
use crate::mem::memfile::GENERATIONS;
use crate::mem::pkey::Pkey;
use crate::mem::registry;
use crate::mem::residue;
use crate::mem::scratch::{self, Placement};
use crate::metrics;
use crate::options::LockPolicy;
use crate::pool::{self, Slot};
use crate::source::Source;

/// AES-256-GCM with a 96-bit nonce (`aes_gcm::Aes256Gcm`), keyed with the
/// encryption schedule alone: GCM never runs the block cipher backwards,
/// and expanding the decryption schedule too (as `Aes256Gcm` does) cost
/// about 50 ns of every sealed access and creation.
type Aes256Gcm = AesGcm<Aes256Enc, U12>;

/// Bytes of the sealing key.
const KEY_LEN: usize = 32;
/// Bytes of the authentication tag stored after the ciphertext.
const TAG_LEN: usize = 16;
/// The largest sealed secret: it and the key fit one scratch region on
/// every page size, and its ciphertext one arena slot.
pub(crate) const MAX_LEN: usize = 4096;
/// Associated data: this label, then the secret's id and length.
const AD_LABEL: &[u8; 16] = b"securememory-sv1";

/// The sealing key of one fork generation: a locked pool slot, the
/// counter its nonces come from, and the purge epoch it was made in.
struct SealKey {
    slot: Slot,
    next: AtomicU64,
    epoch: u64,
}

/// Per fork generation, the key in `PROT_NONE` pool pages (`[g][0]`) and
/// the one in keyed pool pages (`[g][1]`). A fork child copied while a
/// parent thread held a lock is on a generation of its own.
///
/// A key is replaced after a purge: the signal path replaces its pool page
/// with zeros, and a secret sealed under a zeroed key would be plaintext to
/// whoever reads the arena. The old key is leaked, never freed: secrets
/// sealed under it (all purged) still point at it.
static KEYS: [[Mutex<Option<&'static SealKey>>; 2]; GENERATIONS] =
    [const { [const { Mutex::new(None) }; 2] }; GENERATIONS];

/// This generation's sealing key for pool pages protected with `pkey` (or
/// `PROT_NONE`), made on first use and after each purge. Made outside the
/// lock (the pool may call user code: a metrics recorder): two threads
/// racing both make one, the loser's is wiped and given back.
fn seal_key(pkey: Option<Pkey>) -> Result<&'static SealKey> {
    let gen = fork::generation() as usize;
    let cell = &KEYS.get(gen).ok_or_else(|| {
        Error::Unsupported(format!(
            "sealed layout: fork chain deeper than {GENERATIONS} processes"
        ))
    })?[usize::from(pkey.is_some())];
    // Read before the key is made: a purge while it is made leaves it stale.
    let epoch = registry::epoch();
    let current = || *cell.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = current().filter(|k| k.epoch == epoch) {
        return Ok(k);
    }
    // This thread's scratch first: every access needs one, and under a
    // small memlock limit the pool then makes a one-page chunk for the key
    // instead of taking the whole budget with a full one.
    let warm = scratch::reserve(KEY_LEN, Placement::Any, LockPolicy::Require)?;
    // Always locked, whatever the factory's policy: every factory of the
    // process shares this key.
    let slot = pool::create(KEY_LEN, &mut Source::Random, LockPolicy::Require, pkey)?;
    drop(warm);
    let mut made = Some(SealKey {
        slot,
        next: AtomicU64::new(0),
        epoch,
    });
    let key = {
        let mut c = cell.lock().unwrap_or_else(|p| p.into_inner());
        match *c {
            Some(k) if k.epoch >= epoch => k,
            _ => {
                let k: &'static SealKey = Box::leak(Box::new(made.take().expect("made above")));
                *c = Some(k);
                k
            }
        }
    };
    // The loser's key, wiped and given back outside the lock.
    drop(made);
    Ok(key)
}

impl SealKey {
    /// A nonce never used under this key (see the module docs).
    fn next_id(&self) -> Result<u64> {
        self.next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .map_err(|_| Error::Unsupported("sealed layout: nonces exhausted".into()))
    }

    /// Run `f` with the cipher keyed by a copy of the key in this thread's
    /// scratch, next to the plaintext; the copy is wiped, the cipher
    /// zeroized and the residue cleared before this returns.
    fn with_cipher<R>(&self, lock: LockPolicy, f: impl FnOnce(&Aes256Gcm) -> R) -> Result<R> {
        // Never use a key in another process: a raw fork child copied the
        // counter, and might still read the key through an inherited
        // descriptor; the same nonce under the same key would follow.
        if fork::generation() != self.slot.chunk_fork_gen() {
            return Err(Error::Forked);
        }
        let r = run_cipher(&self.slot, lock, f);
        // The cipher's frames lie below this one: cleared here.
        residue::clear_after_cipher();
        r
    }
}

/// Key the cipher from a scratch copy of the key in `slot` and run `f`.
/// Never inlined, so that everything the cipher leaves on the stack (its
/// copy of the key, keystream, blocks of the message, the tag) is in this
/// frame or below it, where `residue::clear_after_cipher` reaches.
#[inline(never)]
fn run_cipher<R>(slot: &Slot, lock: LockPolicy, f: impl FnOnce(&Aes256Gcm) -> R) -> Result<R> {
    let mut key = scratch::reserve(KEY_LEN, Placement::Any, lock)?;
    slot.copy_out(0, &mut key)?;
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key));
    Ok(f(&cipher))
}

fn nonce(id: u64) -> Nonce<Aes256Gcm> {
    let mut n = Nonce::<Aes256Gcm>::default();
    n[4..].copy_from_slice(&id.to_le_bytes());
    n
}

fn associated_data(id: u64, len: usize) -> [u8; 32] {
    let mut ad = [0u8; 32];
    ad[..16].copy_from_slice(AD_LABEL);
    ad[16..24].copy_from_slice(&id.to_le_bytes());
    ad[24..].copy_from_slice(&(len as u64).to_le_bytes());
    ad
}

/// One sealed secret: its ciphertext and tag in an arena slot, its id
/// (nonce) and the key it was sealed under. The slot is wiped and given
/// back once, by [`release`](Sealed::release) or on drop.
pub(crate) struct Sealed {
    slot: ArenaSlot,
    key: &'static SealKey,
    id: u64,
    len: usize,
    /// The factory's lock policy, which the scratch of every access follows.
    lock: LockPolicy,
}

impl Sealed {
    /// Fill this thread's scratch with `len` bytes from `src`, seal them
    /// there and store the ciphertext. The plaintext is wiped on every path.
    pub(crate) fn create(
        len: usize,
        src: &mut Source<'_>,
        lock: LockPolicy,
        pkey: Option<Pkey>,
    ) -> Result<Sealed> {
        if len > MAX_LEN {
            return Err(Error::InvalidSize {
                size: len,
                reason: "larger than a sealed secret can be (4096 bytes)",
            });
        }
        let key = seal_key(pkey)?;
        let mut slot = arena::take(len + TAG_LEN)?;
        let id = key.next_id()?;
        {
            let mut plain = scratch::reserve(len, Placement::Any, lock)?;
            src.fill(&mut plain)?;
            // The source may be user code (a reader) that forked: in the
            // child, `with_cipher` refuses the parent's key.
            // The tag is written inside the cipher's frame, so it too is
            // cleared with the rest of what the cipher left on the stack.
            key.with_cipher(lock, |c| {
                let tag = c
                    .encrypt_in_place_detached(&nonce(id), &associated_data(id, len), &mut plain)
                    .map_err(|_| Error::Unsupported("sealing failed".into()))?;
                slot.write_at(0, &plain);
                slot.write_at(len, &tag);
                Ok::<(), Error>(())
            })??;
        }
        let sealed = Sealed {
            slot,
            key,
            id,
            len,
            lock,
        };
        metrics::sealed_changed(1, arena::mapped_bytes());
        // The recorder told (user code) may have forked: in that child the
        // ciphertext is the parent's (zeros here), so no secret (as a
        // region made across a fork is not one either).
        if fork::generation() != sealed.fork_gen() {
            return Err(Error::Forked);
        }
        Ok(sealed)
    }

    /// The fork generation the ciphertext was stored in.
    pub(crate) fn fork_gen(&self) -> u64 {
        self.slot.fork_gen()
    }

    /// Open the whole secret into `out` (its length): the ciphertext is
    /// copied in and decrypted in place. A ciphertext or tag that fails
    /// authentication leaves `out` zeroed and is [`Error::AuthenticationFailed`].
    fn open_into(&self, out: &mut [u8]) -> Result<()> {
        let opened = self.key.with_cipher(self.lock, |c| {
            let mut tag = Tag::<Aes256Gcm>::default();
            self.slot.read_at(0, out);
            self.slot.read_at(self.len, &mut tag);
            c.decrypt_in_place_detached(
                &nonce(self.id),
                &associated_data(self.id, self.len),
                out,
                &tag,
            )
        });
        match opened {
            Ok(Ok(())) => Ok(()),
            // A purge since the key was made (the signal path zeroes its
            // page, perhaps during this very open): no tampering, and the
            // secret, made no later than its key, is purged.
            Ok(Err(_)) if self.key.epoch != registry::epoch() => {
                out.zeroize();
                Err(Error::Purged)
            }
            Ok(Err(_)) => {
                out.zeroize();
                metrics::seal_failed();
                crate::shield::shield(|| {
                    tracing::error!("securememory: a sealed secret failed authentication (memory corruption or tampering)")
                });
                Err(Error::AuthenticationFailed)
            }
            Err(e) => {
                out.zeroize();
                Err(e)
            }
        }
    }

    /// Copy `[pos, pos + buf.len())` of the plaintext into `buf`: the whole
    /// secret is opened in place in `buf` (the copy path's scratch, or a
    /// reader's buffer of the secret's length), a part through a scratch
    /// reservation of its own.
    #[inline]
    pub(crate) fn copy_out(&self, pos: usize, buf: &mut [u8]) -> Result<()> {
        if pos == 0 && buf.len() == self.len {
            return self.open_into(buf);
        }
        let end = pos
            .checked_add(buf.len())
            .filter(|&e| e <= self.len)
            .ok_or_else(|| Error::Unsupported("read past a sealed secret".into()))?;
        let mut plain = scratch::reserve(self.len, Placement::Any, self.lock)?;
        self.open_into(&mut plain)?;
        crate::mem::copy::copy(buf, &plain[pos..end]);
        Ok(())
    }

    /// Wipe the ciphertext and give the slot back (once).
    pub(crate) fn release(&self) {
        if self.slot.release() {
            metrics::sealed_changed(-1, arena::mapped_bytes());
        }
    }

    /// The sealing key's slot (address, length): what must stay unreadable
    /// for the secret to be unreadable at rest.
    pub(crate) fn key_pages(&self) -> (usize, usize) {
        (self.key.slot.addr(), KEY_LEN)
    }

    /// Address and length of the ciphertext and tag in the arena (tests).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn ciphertext(&self) -> (usize, usize) {
        (self.slot.addr(), self.len + TAG_LEN)
    }

    /// Write the sealing key to `fd` at offset 0 through this thread's
    /// scratch (tests: a core dump must not hold it).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn write_key(&self, fd: std::os::fd::RawFd) -> Result<()> {
        let mut key = scratch::reserve(KEY_LEN, Placement::Any, self.lock)?;
        self.key.slot.copy_out(0, &mut key)?;
        crate::mem::sys::pwrite_all(fd, &key, 0).map_err(Error::AccessFailed)
    }

    /// Flip the bits of `xor` in byte `at` of the ciphertext or tag (tests).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn tamper(&self, at: usize, xor: u8) {
        assert!(at < self.len + TAG_LEN, "past the ciphertext and tag");
        self.slot.poke(at, xor);
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        self.release();
    }
}
