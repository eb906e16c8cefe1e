//! Where a secret lives: pages of its own (plain or guarded), a pool slot,
//! or sealed (encrypted in the ciphertext arena; `sealed.rs` alone knows how).
//! The secret asks its [`Storage`] to copy out, open a window, check the
//! canary and release; it never looks inside. The guarded layout is known
//! in `guarded.rs` alone.

mod guarded;
pub(crate) mod live;
mod sealed;

use crate::access::{Drained, Entered, Turn, Window};
use crate::error::{Error, Result};
use crate::mem::fork;
use crate::mem::pkey::Pkey;
use crate::mem::region::{Backing, Region, RegionSpec, RegionWindow};
use crate::mem::scratch::{self, Placement};
use crate::options::{Backend, Layout, LockPolicy, Options};
use crate::pool::{self, Slot};
use crate::source::Source;
use guarded::Guarded;
use sealed::Sealed;

pub(crate) use sealed::MAX_LEN as SEALED_MAX_LEN;

/// Where a secret lives. Its memory is released (wiped, unlocked, unmapped
/// or given back) once: by [`release`](Storage::release), or when dropped
/// (a panic before the secret is built leaks nothing), whichever is first.
pub(crate) struct Storage(Kind);

enum Kind {
    /// Pages of its own, the secret at their start.
    Pages(Region),
    /// Pages of its own between guard pages, with a canary.
    Guarded(Guarded),
    /// A slot in a shared pool page.
    Slot(Slot),
    /// Encrypted in the unlocked ciphertext arena.
    Sealed(Sealed),
}

/// What a release found and did.
pub(crate) struct Released {
    /// `Ok(false)` if a guarded secret's canary was damaged, an error if it
    /// could not be read; `Ok(true)` otherwise.
    pub(crate) canary_intact: Result<bool>,
    /// The wipe's outcome.
    pub(crate) wiped: Result<()>,
}

impl Storage {
    /// Storage for a new secret of `len` bytes, written from `src`: a pool
    /// slot for a small pooled secret, else pages of its own.
    pub(crate) fn create(
        len: usize,
        src: &mut Source<'_>,
        opts: &Options,
        key: Option<Pkey>,
    ) -> Result<Storage> {
        if opts.layout == Layout::Sealed {
            return Ok(Storage(Kind::Sealed(Sealed::create(
                len, src, opts.lock, key,
            )?)));
        }
        if opts.layout == Layout::Pooled && len <= pool::MAX_SLOT {
            return Ok(Storage(Kind::Slot(pool::create(len, src, opts.lock, key)?)));
        }
        let backing = match opts.backend {
            Backend::Anonymous => Backing::Anonymous,
            Backend::MemfdSecret => Backing::SecretFile,
            _ => Backing::MemoryFile { key: None },
        };
        match stage(len, src, backing, opts.lock)? {
            Some(staged) => Self::own_pages(len, &mut Source::Bytes(&staged), backing, opts),
            None => Self::own_pages(len, src, backing, opts),
        }
    }

    /// Pages of its own (guarded or not) for a new secret of `len` bytes.
    fn own_pages(
        len: usize,
        src: &mut Source<'_>,
        backing: Backing,
        opts: &Options,
    ) -> Result<Storage> {
        if opts.layout == Layout::Guarded {
            return Ok(Storage(Kind::Guarded(Guarded::create(
                len, src, backing, opts.lock,
            )?)));
        }
        let spec = RegionSpec {
            len,
            guard: false,
            backing,
            lock: opts.lock,
        };
        let region = match Region::ready(&spec) {
            Some(mut region) => {
                fill_ready(&mut region, 0, &[], len, src)?;
                region
            }
            None => Region::create_reusable(spec, |data| src.fill(&mut data[..len]))?,
        };
        Ok(Storage(Kind::Pages(region)))
    }

    /// The pages and the secret's offset in them; `None` for a pool slot.
    #[inline]
    fn pages(&self) -> Option<(&Region, usize)> {
        match &self.0 {
            Kind::Pages(region) => Some((region, 0)),
            Kind::Guarded(g) => Some((&g.region, g.off)),
            Kind::Slot(_) | Kind::Sealed(_) => None,
        }
    }

    /// The fork generation the memory was made in.
    pub(crate) fn fork_gen(&self) -> u64 {
        match &self.0 {
            Kind::Pages(region) => region.fork_gen(),
            Kind::Guarded(g) => g.region.fork_gen(),
            Kind::Slot(slot) => slot.chunk_fork_gen(),
            Kind::Sealed(s) => s.fork_gen(),
        }
    }

    /// Kernel (or keyed) copy of `[pos, pos + buf.len())` of the secret.
    #[inline]
    pub(crate) fn copy_out(&self, pos: usize, buf: &mut [u8]) -> Result<()> {
        match &self.0 {
            Kind::Pages(region) => region.copy_out(pos, buf),
            Kind::Guarded(g) => g.region.copy_out(g.off + pos, buf),
            Kind::Slot(slot) => slot.copy_out(pos, buf),
            Kind::Sealed(s) => s.copy_out(pos, buf),
        }
    }

    /// Where a copy of the secret goes in the scratch: a guarded secret's
    /// copy sits flush against a guard page, as the secret does.
    #[inline]
    pub(crate) fn placement(&self) -> Placement {
        match &self.0 {
            Kind::Guarded(_) => Placement::FlushAgainstGuard,
            _ => Placement::Any,
        }
    }

    /// The window the gate opens and closes around an access: the pages,
    /// or nothing for a slot (only ever read by the copy path).
    #[inline]
    pub(crate) fn window(&self) -> StorageWindow<'_> {
        match self.pages_window() {
            Some(w) => StorageWindow::Pages(w),
            None => StorageWindow::None,
        }
    }

    /// The pages as a window to view the secret through; `None` for a slot.
    #[inline]
    pub(crate) fn pages_window(&self) -> Option<PagesWindow<'_>> {
        self.pages()
            .map(|(region, off)| PagesWindow { region, off })
    }

    /// Check the canary, then wipe and release the memory. `drained`
    /// proves no access is in flight. The memory is released once: later
    /// calls (and the drop) do nothing.
    pub(crate) fn release(&self, drained: &Drained) -> Released {
        let canary_intact = match &self.0 {
            Kind::Guarded(g) => g.canary_intact(drained),
            _ => Ok(true),
        };
        let wiped = match &self.0 {
            Kind::Pages(region) => region.release(drained),
            Kind::Guarded(g) => g.region.release(drained),
            Kind::Slot(slot) => slot.release_closed(drained),
            Kind::Sealed(s) => {
                s.release();
                Ok(())
            }
        };
        Released {
            canary_intact,
            wiped,
        }
    }

    /// In a fork child: the memory is the parent's; release what is ours to
    /// (a private mapping the child got a copy of), touch nothing else.
    pub(crate) fn release_in_fork_child(&self, drained: &Drained) {
        if let Some((region, _)) = self.pages() {
            let _ = region.release(drained);
        }
    }

    /// Address and length of the memory holding a secret of `len` bytes:
    /// the data pages (guard pages excluded), or the slot's first `len`;
    /// for a sealed secret, its sealing key's slot (what must stay
    /// unreadable for the secret to be).
    pub(crate) fn data_pages(&self, len: usize) -> (usize, usize) {
        match &self.0 {
            Kind::Pages(region) | Kind::Guarded(Guarded { region, .. }) => {
                (region.data_addr(), region.data_len())
            }
            Kind::Slot(slot) => (slot.addr(), len),
            Kind::Sealed(s) => s.key_pages(),
        }
    }

    /// Address of the secret's first byte (test hook).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn data_address(&self) -> usize {
        match &self.0 {
            Kind::Pages(region) => region.data_addr(),
            Kind::Guarded(g) => g.region.data_addr() + g.off,
            Kind::Slot(slot) => slot.addr(),
            Kind::Sealed(s) => s.ciphertext().0,
        }
    }

    /// A sealed secret's ciphertext and tag in the arena, as (address,
    /// length) (test hook).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn sealed_ciphertext(&self) -> Option<(usize, usize)> {
        match &self.0 {
            Kind::Sealed(s) => Some(s.ciphertext()),
            _ => None,
        }
    }

    /// Write a sealed secret's sealing key to `fd` (test hook).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn write_sealing_key(&self, fd: std::os::fd::RawFd) -> Result<()> {
        match &self.0 {
            Kind::Sealed(s) => s.write_key(fd),
            _ => Err(Error::Unsupported("not a sealed secret".into())),
        }
    }

    /// Flip the bits of `xor` in byte `at` of a sealed secret's ciphertext
    /// and tag (test hook).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn tamper_sealed(&self, at: usize, xor: u8) -> Result<()> {
        match &self.0 {
            Kind::Sealed(s) => {
                s.tamper(at, xor);
                Ok(())
            }
            _ => Err(Error::Unsupported("not a sealed secret".into())),
        }
    }

    /// Flip one byte of a guarded secret's canary (test hook).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn corrupt_canary(&self) -> Result<()> {
        match &self.0 {
            Kind::Guarded(g) => g.corrupt_canary(),
            _ => Err(Error::Unsupported("not a guarded secret".into())),
        }
    }
}

/// The bytes of a source other than the caller's (random bytes, a
/// reader's, a descriptor's) for pages of the memory file, filled into this
/// thread's scratch first (locked, never dumped, wiped when dropped): from
/// there a ready page takes them with one write through the file instead
/// of a window (two protection changes). Filled before any page is taken,
/// so a source that fails or panics (user code) costs no ready page.
/// `None` (the source is used as it is) for the caller's bytes, another
/// backing, a secret larger than the scratch, or a scratch that cannot be
/// had.
fn stage(
    len: usize,
    src: &mut Source<'_>,
    backing: Backing,
    lock: LockPolicy,
) -> Result<Option<scratch::ScratchBuf>> {
    if matches!(src, Source::Bytes(_)) || !matches!(backing, Backing::MemoryFile { key: None }) {
        return Ok(None);
    }
    let Ok(mut staged) = scratch::reserve(len, Placement::Any, lock) else {
        return Ok(None);
    };
    let generation = fork::generation();
    src.fill(&mut staged)?;
    // A reader that forked: in the child the scratch (wipe-on-fork) lost
    // what was read before the fork; no secret from it.
    if fork::generation() != generation {
        return Err(Error::Forked);
    }
    Ok(Some(staged))
}

/// Write a new secret of `len` bytes from `src` at `off` of a ready page
/// from the store (`region.ready`), with `before` (a canary) just in front:
/// through the memory file where the page has one and the bytes are the
/// caller's or staged (no page-table change), else writable for the fill
/// alone. On error the caller drops the region: wiped and unmapped.
fn fill_ready(
    region: &mut Region,
    off: usize,
    before: &[u8],
    len: usize,
    src: &mut Source<'_>,
) -> Result<()> {
    match src {
        Source::Bytes(b) if region.can_copy() && b.len() == len => {
            if !before.is_empty() {
                region.write_ready(off - before.len(), before)?;
            }
            // Each write checks first that this is still the page's process;
            // nothing between them runs user code.
            region.write_ready(off, b)
        }
        _ => region.fill_ready(|data| {
            data[off - before.len()..off].copy_from_slice(before);
            src.fill(&mut data[off..off + len])
        }),
    }
}

/// A secret's own pages seen as a window, and where the secret is in them.
pub(crate) struct PagesWindow<'a> {
    region: &'a Region,
    off: usize,
}

impl PagesWindow<'_> {
    /// The secret's `len` bytes while the window is open (`proof`).
    #[inline]
    pub(crate) fn view<'a, W: Window>(&'a self, len: usize, proof: &'a Entered<'a, W>) -> &'a [u8] {
        self.region.view(self.off, len, proof)
    }
}

impl Window for PagesWindow<'_> {
    #[inline]
    fn open(&self, turn: &Turn) -> Result<()> {
        RegionWindow::new(self.region).open(turn)
    }
    #[inline]
    fn close(&self, turn: &Turn) -> Result<()> {
        RegionWindow::new(self.region).close(turn)
    }
    fn changed(&self, result: &Result<()>) {
        RegionWindow::new(self.region).changed(result);
    }
}

/// The window of any storage: its pages, or nothing for a pool slot.
pub(crate) enum StorageWindow<'a> {
    Pages(PagesWindow<'a>),
    None,
}

impl Window for StorageWindow<'_> {
    fn open(&self, turn: &Turn) -> Result<()> {
        match self {
            StorageWindow::Pages(w) => w.open(turn),
            StorageWindow::None => Err(Error::Unsupported("pooled secrets have no window".into())),
        }
    }
    fn close(&self, turn: &Turn) -> Result<()> {
        match self {
            StorageWindow::Pages(w) => w.close(turn),
            StorageWindow::None => Ok(()),
        }
    }
    fn changed(&self, result: &Result<()>) {
        if let StorageWindow::Pages(w) = self {
            w.changed(result);
        }
    }
}
