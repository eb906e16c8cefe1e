//! README claims about the public API that no other test asserted, each
//! checked in a child process of its own (process-wide figures and limits).
#![cfg(target_os = "linux")]

#[macro_use]
mod common;

use std::io::{Cursor, Read, Write};
use std::os::fd::AsFd;

use securememory::{
    AccessPath, Backend, CoreDumps, Error, Layout, Options, PoolProtection, ProtectedFactory,
    Secret, SecretFactory,
};

fn filled(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 + 1).collect()
}

child_test! {
    /// "`Auto` is `Copy` on `Memfd`, `Window` elsewhere. `secret.access_path()`
    /// tells which one a secret uses"; "Invalid combinations (the copy path or
    /// the pool on a backend other than `Memfd` ...) fail at
    /// `ProtectedFactory::new` with `Error::Unsupported`".
    fn access_auto_and_invalid_combinations() {
        let f = ProtectedFactory::default();
        assert_eq!(f.create_random(32).unwrap().access_path(), AccessPath::Copy);
        let a = ProtectedFactory::new(Options::default().backend(Backend::Anonymous)).unwrap();
        assert_eq!(a.create_random(32).unwrap().access_path(), AccessPath::Window);
        for backend in [Backend::Anonymous, Backend::MemfdSecret] {
            if backend == Backend::MemfdSecret && securememory::memfd_secret_status().is_err() {
                continue;
            }
            let copy = ProtectedFactory::new(Options::default().backend(backend).access(AccessPath::Copy));
            assert!(matches!(copy, Err(Error::Unsupported(_))), "{backend:?} copy: {copy:?}");
            let pool = ProtectedFactory::new(Options::default().backend(backend).layout(Layout::Pooled));
            assert!(matches!(pool, Err(Error::Unsupported(_))), "{backend:?} pool: {pool:?}");
        }
        if securememory::memfd_secret_status().is_err() {
            let r = ProtectedFactory::new(Options::default().backend(Backend::MemfdSecret));
            assert!(matches!(r, Err(Error::Unsupported(_))), "{r:?}");
        }
        // `Auto` resolves: `options().backend` names what it chose.
        let auto = ProtectedFactory::new(Options::default().backend(Backend::Auto)).unwrap();
        let chosen = auto.options().backend;
        if securememory::memfd_secret_status().is_ok() {
            assert_eq!(chosen, Backend::MemfdSecret);
        } else {
            assert_eq!(chosen, Backend::Memfd);
        }
        assert_eq!(auto.create_random(32).unwrap().backend(), chosen);
    }
}

child_test! {
    /// "`Pooled`: secrets up to 1024 bytes share locked pages"; the rustdoc:
    /// larger ones get pages of their own.
    fn pool_holds_up_to_1024_bytes() {
        assert_eq!(securememory::POOL_MAX_SLOT, 1024);
        let f = ProtectedFactory::new(Options::default().layout(Layout::Pooled)).unwrap();
        let before = securememory::stats().pool_slots_used;
        let small = f.new(&mut filled(1024)).unwrap();
        assert_eq!(securememory::stats().pool_slots_used, before + 1);
        let big = f.new(&mut filled(1025)).unwrap();
        assert_eq!(securememory::stats().pool_slots_used, before + 1);
        assert_eq!(big.with_bytes(|b| b.to_vec()).unwrap(), filled(1025));
        assert_eq!(small.with_bytes(|b| b.to_vec()).unwrap(), filled(1024));
    }
}

child_test! {
    /// "The scratch buffer is two locked ... pages (`scratch_capacity()`
    /// bytes)"; "an 8 KiB locked scratch buffer"; "A secret larger than the
    /// scratch capacity takes the window path instead".
    fn scratch_is_two_pages_and_larger_secrets_still_read() {
        let page = common::page_size();
        assert_eq!(securememory::scratch_capacity(), 2 * page);
        let f = ProtectedFactory::default();
        let len = securememory::scratch_capacity() + 1;
        let s = f.new(&mut filled(len)).unwrap();
        assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), filled(len));
        let mut out = Vec::new();
        s.reader().read_to_end(&mut out).unwrap();
        assert_eq!(out, filled(len));
    }
}

child_test! {
    /// Quickstart and "Other ways in": the source is wiped; a failed
    /// creation leaves it (rustdoc); `reader()` gives `Ok(0)` at the end;
    /// `from_fd` consumes nothing past the secret; `from_reader` ending early
    /// is `ReadFailed`; `Secret` is `Send + Sync`; dropping closes.
    fn quickstart_and_other_ways_in() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Secret>();
        let f = ProtectedFactory::default();
        let mut key = filled(32);
        let s = f.new(&mut key).unwrap();
        assert_eq!(key, vec![0u8; 32]);
        let mut r = s.reader();
        let mut buf = [0u8; 20];
        assert_eq!(r.read(&mut buf).unwrap(), 20);
        assert_eq!(r.read(&mut buf).unwrap(), 12);
        assert_eq!(r.read(&mut buf).unwrap(), 0);

        let mut empty: [u8; 0] = [];
        assert!(matches!(f.new(&mut empty), Err(Error::InvalidSize { .. })));

        let (rd, mut wr) = std::io::pipe().unwrap();
        wr.write_all(&filled(40)).unwrap();
        drop(wr);
        let s2 = f.from_fd(rd.as_fd(), 32).unwrap();
        assert_eq!(s2.with_bytes(|b| b.to_vec()).unwrap(), filled(32));
        let mut rest = Vec::new();
        (&rd).read_to_end(&mut rest).unwrap();
        assert_eq!(rest, filled(40)[32..].to_vec());

        let short = f.from_reader(&mut Cursor::new(vec![1u8; 8]), 32);
        assert!(matches!(short, Err(Error::ReadFailed(_))), "{:?}", short.map(|s| s.len()));

        let in_use = securememory::stats().in_use;
        drop(s);
        drop(s2);
        assert_eq!(securememory::stats().in_use, in_use - 2);
    }
}

child_test! {
    /// "Accesses nest up to 32 deep per thread (`Error::NestingTooDeep`
    /// beyond)"; "A panic inside the closure ends the access on unwind ...
    /// the secret stays usable"; close inside an access is
    /// `CloseWithinAccess` and leaves the secret open.
    fn nesting_panics_and_close_within_access() {
        fn nest(s: &Secret, depth: usize) -> Result<usize, Error> {
            s.with_bytes(|_| if depth == 1 { Ok(1) } else { nest(s, depth - 1).map(|d| d + 1) })?
        }
        for opts in [
            Options::default(),
            Options::default().layout(Layout::Pooled),
            Options::default().backend(Backend::Anonymous),
        ] {
            let f = ProtectedFactory::new(opts).unwrap();
            let s = f.create_random(32).unwrap();
            assert_eq!(nest(&s, 32).unwrap(), 32);
            assert!(matches!(nest(&s, 33), Err(Error::NestingTooDeep(_))), "{opts:?}");
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                s.with_bytes(|_| panic!("inside")).ok()
            }));
            assert!(r.is_err());
            assert_eq!(s.with_bytes(|b| b.len()).unwrap(), 32);
            assert!(matches!(s.with_bytes(|_| s.close()).unwrap(), Err(Error::CloseWithinAccess)));
            assert!(!s.is_closed());
            s.close().unwrap();
            assert!(matches!(s.with_bytes(|_| ()), Err(Error::Closed)));
        }
    }
}

child_test! {
    /// "`DisableForProcess` also sets `RLIMIT_CORE` to 0 ... (also
    /// `securememory::disable_core_dumps()`)"; the default leaves it.
    fn disable_for_process_sets_rlimit_core_to_zero() {
        let core = || {
            let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit writes the struct it is given.
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut r) }, 0);
            r.rlim_cur
        };
        let r = libc::rlimit { rlim_cur: 4096, rlim_max: 4096 };
        // SAFETY: setrlimit reads the struct it is given.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &r) }, 0);
        ProtectedFactory::default().create_random(8).unwrap();
        assert_eq!(core(), 4096);
        ProtectedFactory::new(Options::default().core_dumps(CoreDumps::DisableForProcess)).unwrap();
        assert_eq!(core(), 0);
        // The hard limit may be 0 now too, so the function is checked after.
        securememory::disable_core_dumps().unwrap();
        assert_eq!(core(), 0);
    }
}

child_test! {
    /// `pool_protection` `Auto`: "the key where available and the CPU is not
    /// affected by Meltdown"; `ProtectionKey` is `Unsupported` where the
    /// machine has no keys.
    fn pool_protection_auto_follows_keys_and_meltdown() {
        let keys = securememory::protection_keys_status().is_ok();
        let auto = ProtectedFactory::new(
            Options::default().layout(Layout::Pooled).pool_protection(PoolProtection::Auto),
        )
        .unwrap();
        let want = if keys && securememory::keys_resist_speculation() {
            PoolProtection::ProtectionKey
        } else {
            PoolProtection::ProtNone
        };
        assert_eq!(auto.options().pool_protection, want);
        let explicit = ProtectedFactory::new(
            Options::default().layout(Layout::Pooled).pool_protection(PoolProtection::ProtectionKey),
        );
        assert_eq!(explicit.is_ok(), keys, "{explicit:?}");
        if !keys {
            assert!(matches!(explicit, Err(Error::Unsupported(_))));
        }
    }
}

child_test! {
    /// "(also `securememory::disable_core_dumps()`)": the function alone
    /// sets `RLIMIT_CORE` to 0.
    fn disable_core_dumps_alone_sets_rlimit_core_to_zero() {
        let r = libc::rlimit { rlim_cur: 4096, rlim_max: 4096 };
        // SAFETY: setrlimit reads the struct it is given.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &r) }, 0);
        securememory::disable_core_dumps().unwrap();
        let mut got = libc::rlimit { rlim_cur: 1, rlim_max: 1 };
        // SAFETY: getrlimit writes the struct it is given.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut got) }, 0);
        assert_eq!(got.rlim_cur, 0);
    }
}

child_test! {
    /// The other refused combinations (README "Invalid combinations"): the
    /// window path with the pool, `ProtectionKey` without the pool; and the
    /// `Auto` backend with the pool resolves to `Memfd` (the pool needs it),
    /// even where `memfd_secret` is available.
    fn pool_window_and_key_without_pool_are_refused() {
        let w = ProtectedFactory::new(Options::default().layout(Layout::Pooled).access(AccessPath::Window));
        assert!(matches!(w, Err(Error::Unsupported(_))), "{w:?}");
        let k = ProtectedFactory::new(Options::default().pool_protection(PoolProtection::ProtectionKey));
        assert!(matches!(k, Err(Error::Unsupported(_))), "{k:?}");
        let auto = ProtectedFactory::new(Options::default().backend(Backend::Auto).layout(Layout::Pooled)).unwrap();
        assert_eq!(auto.options().backend, Backend::Memfd);
        assert_eq!(auto.options().access, AccessPath::Copy);
    }
}

child_test! {
    /// `SecretReader`'s rustdoc: on a closed secret `read` fails with an
    /// `io::Error` whose inner error is `Error::Closed`; the README: a read
    /// at the end is `Ok(0)` and counts no access (no protection change on
    /// the window path).
    fn reader_on_closed_secret_and_at_the_end() {
        for opts in [Options::default(), Options::default().backend(Backend::Anonymous)] {
            let s = ProtectedFactory::new(opts).unwrap().create_random(8).unwrap();
            let mut r = s.reader();
            let mut buf = [0u8; 8];
            assert_eq!(r.read(&mut buf).unwrap(), 8);
            let changes = securememory::stats().protection_changes;
            assert_eq!(r.read(&mut buf).unwrap(), 0);
            assert_eq!(securememory::stats().protection_changes, changes, "{opts:?}");
            s.close().unwrap();
            let e = s.reader().read(&mut buf).unwrap_err();
            let inner = e.get_ref().and_then(|i| i.downcast_ref::<Error>());
            assert!(matches!(inner, Some(Error::Closed)), "{opts:?}: {e:?}");
        }
    }
}

child_test! {
    /// "Each thread that reads through the copy path keeps an 8 KiB locked
    /// scratch buffer for its life (counted in the budget ...); nested
    /// accesses may add 8 KiB regions for as long as the outermost access
    /// lasts."
    fn scratch_is_counted_per_thread_and_per_nested_region() {
        let cap = securememory::scratch_capacity() as u64;
        let f = ProtectedFactory::default();
        let big = f.new(&mut filled(securememory::scratch_capacity())).unwrap();
        let base = securememory::stats().bytes_locked;
        std::thread::scope(|t| {
            t.spawn(|| {
                big.with_bytes(|_| {
                    assert_eq!(securememory::stats().bytes_locked, base + cap);
                    big.with_bytes(|_| {
                        assert_eq!(securememory::stats().bytes_locked, base + 2 * cap);
                    })
                    .unwrap();
                })
                .unwrap();
                assert_eq!(securememory::stats().bytes_locked, base + cap);
            })
            // Joined (not just the scope's end): the thread's exit, where its
            // buffer is freed, is over when `join` returns.
            .join()
            .unwrap();
        });
        assert_eq!(securememory::stats().bytes_locked, base);
    }
}

child_test! {
    /// A copy-path secret larger than the scratch capacity reports
    /// `AccessPath::Copy` but its `with_bytes` opens a window (its pages are
    /// readable inside, two protection changes), while its reader does not.
    fn large_copy_path_secret_reports_copy_but_opens_a_window() {
        let f = ProtectedFactory::default();
        let len = securememory::scratch_capacity() + 1;
        let s = f.new(&mut filled(len)).unwrap();
        assert_eq!(s.access_path(), AccessPath::Copy);
        let before = securememory::stats().protection_changes;
        assert!(s.with_bytes(|_| s.is_readable_now().unwrap()).unwrap());
        assert!(securememory::stats().protection_changes > before);
        assert!(!s.is_readable_now().unwrap());
        let before = securememory::stats().protection_changes;
        let mut out = vec![0u8; len];
        s.reader().read_exact(&mut out).unwrap();
        assert_eq!(securememory::stats().protection_changes, before);
    }
}

child_test! {
    /// The refusals table: a filter denying `getrandom` costs nothing only
    /// when it is in place before the process's first random draw (the
    /// getrandom crate picks its `/dev/urandom` fallback once, at that
    /// draw); installed after it, `create_random` and a guarded creation
    /// (its canary) are `Error::RandomFailed`, and a page `new` still works.
    fn getrandom_denied_after_first_use() {
        let f = ProtectedFactory::default();
        let g = ProtectedFactory::new(Options::default().layout(Layout::Guarded)).unwrap();
        f.create_random(32).unwrap();
        common::seccomp::deny(&[(libc::SYS_getrandom, libc::EPERM)]).unwrap();
        let r = f.create_random(32);
        assert!(matches!(r, Err(Error::RandomFailed(_))), "{:?}", r.map(|s| s.len()));
        let gr = g.new(&mut filled(32));
        assert!(matches!(gr, Err(Error::RandomFailed(_))), "{:?}", gr.map(|s| s.len()));
        let s = f.new(&mut filled(32)).unwrap();
        assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), filled(32));
    }
}

child_test! {
    /// The refusals table's `memfd_create` row: the memory file is opened
    /// once per process; a filter installed after it is open costs nothing.
    fn memfd_create_denied_after_the_memory_file_is_open() {
        let f = ProtectedFactory::default();
        let p = ProtectedFactory::new(Options::default().layout(Layout::Pooled)).unwrap();
        f.create_random(32).unwrap();
        common::seccomp::deny(&[(libc::SYS_memfd_create, libc::EPERM)]).unwrap();
        assert_eq!(f.new(&mut filled(32)).unwrap().with_bytes(|b| b.to_vec()).unwrap(), filled(32));
        assert_eq!(p.new(&mut filled(32)).unwrap().len(), 32);
        // Past the file's first growth too.
        assert_eq!(f.new(&mut filled(4 << 20)).unwrap().len(), 4 << 20);
    }
}

child_test! {
    /// The refusals table's preface: its rows are for a filter in place from
    /// the start. Installed later, it refuses only calls still to be made:
    /// a pooled secret in a free slot of an existing chunk makes no
    /// `madvise`, `mprotect` or `mmap` call, and its chunk was advised
    /// do-not-dump when it was made.
    fn late_madvise_and_mprotect_filters_spare_existing_pool_chunks() {
        let p = ProtectedFactory::new(Options::default().layout(Layout::Pooled)).unwrap();
        let _keep = p.new(&mut filled(32)).unwrap();
        // This thread's scratch buffer exists before the filter.
        _keep.with_bytes(|_| ()).unwrap();
        let f = ProtectedFactory::default();
        common::seccomp::deny(&[
            (libc::SYS_madvise, libc::EPERM),
            (libc::SYS_mprotect, libc::EPERM),
            (libc::SYS_mmap, libc::EPERM),
        ])
        .unwrap();
        let s = p.new(&mut filled(32)).unwrap();
        assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), filled(32));
        s.close().unwrap();
        let page = f.new(&mut filled(32));
        assert!(page.is_err(), "{:?}", page.map(|s| s.len()));
    }
}

child_test! {
    /// The refusals table's map-count row: a creation that needs a new
    /// mapping is `LimitReached(MapCount)`; a pooled secret in a free slot
    /// of an existing chunk needs none and is made as usual.
    fn map_count_reached_spares_a_free_pool_slot() {
        let p = ProtectedFactory::new(Options::default().layout(Layout::Pooled)).unwrap();
        let f = ProtectedFactory::default();
        let keep = p.new(&mut filled(32)).unwrap();
        keep.with_bytes(|_| ()).unwrap();
        drop((0..256).map(|_| vec![1u8; 4096]).collect::<Vec<_>>());
        let mut maps = Vec::new();
        loop {
            let prot = if maps.len() % 2 == 0 { libc::PROT_READ } else { libc::PROT_NONE };
            // SAFETY: a fresh private one-page mapping at an address the kernel picks.
            let m = unsafe {
                libc::mmap(std::ptr::null_mut(), common::page_size(), prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
            };
            if m == libc::MAP_FAILED {
                break;
            }
            maps.push(m as usize);
        }
        let page = f.new(&mut filled(32)).map(drop);
        let pooled = p.new(&mut filled(32)).map(|s| s.with_bytes(|b| b.to_vec()));
        for m in maps {
            // SAFETY: one of the mappings made above, unmapped once.
            unsafe { libc::munmap(m as *mut libc::c_void, common::page_size()) };
        }
        assert!(
            matches!(&page, Err(Error::LimitReached { limit: securememory::ProcessLimit::MapCount { .. }, .. })),
            "{page:?}"
        );
        assert_eq!(pooled.unwrap().unwrap(), filled(32));
    }
}

/// The option table's "default first" column, and `ProtectedFactory::default()`
/// ("memfd, copy path" in the Performance section).
#[test]
fn option_defaults_are_the_first_listed() {
    let o = Options::default();
    assert_eq!(o.backend, Backend::Memfd);
    assert_eq!(o.layout, Layout::Page);
    assert_eq!(o.access, AccessPath::Auto);
    assert_eq!(o.lock, securememory::LockPolicy::Require);
    assert_eq!(o.core_dumps, CoreDumps::ExcludeSecrets);
    assert_eq!(o.pool_protection, PoolProtection::ProtNone);
    let d = ProtectedFactory::default().options();
    assert_eq!(
        (d.backend, d.layout, d.access),
        (Backend::Memfd, Layout::Page, AccessPath::Copy)
    );
}

child_test! {
    /// Window path: "made readable when the first access begins and
    /// `PROT_NONE` again when the last one ends; overlapping accesses share
    /// one window" (two protection changes per access, two for a nest);
    /// the copy path makes none.
    fn window_changes_protection_twice_per_outermost_access() {
        for (backend, per_access) in [(Backend::Anonymous, 2), (Backend::Memfd, 0)] {
            let s = ProtectedFactory::new(Options::default().backend(backend)).unwrap().create_random(32).unwrap();
            s.with_bytes(|_| ()).unwrap();
            let c = || securememory::stats().protection_changes;
            let before = c();
            s.with_bytes(|_| ()).unwrap();
            assert_eq!(c() - before, per_access, "{backend:?} one access");
            let before = c();
            s.with_bytes(|_| s.with_bytes(|_| s.with_bytes(|_| ()).unwrap()).unwrap()).unwrap();
            assert_eq!(c() - before, per_access, "{backend:?} three nested");
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod pkru {
    use std::sync::atomic::{AtomicU32, Ordering};

    pub static IN_HANDLER: AtomicU32 = AtomicU32::new(u32::MAX);

    pub fn read() -> u32 {
        let pkru: u32;
        // SAFETY: RDPKRU (ecx = 0) reads this thread's PKRU; needs OSPKE,
        // which the caller checked.
        unsafe {
            std::arch::asm!("rdpkru", in("ecx") 0, out("eax") pkru, out("edx") _, options(nomem, nostack))
        };
        pkru
    }

    pub fn write(pkru: u32) {
        // SAFETY: WRPKRU (ecx = edx = 0) sets this thread's PKRU; no memory
        // of this program is tagged with a key here but the library's pool.
        unsafe {
            std::arch::asm!("wrpkru", in("eax") pkru, in("ecx") 0, in("edx") 0, options(nostack))
        };
    }

    pub extern "C" fn handler(_: libc::c_int) {
        IN_HANDLER.store(read(), Ordering::SeqCst);
    }
}

#[cfg(target_arch = "x86_64")]
child_test! {
    /// The protection-keys section: "signal handlers run with that default
    /// too" (the kernel's default PKRU), even when the interrupted thread
    /// had every key open.
    fn signal_handlers_run_with_the_default_pkru() {
        if securememory::protection_keys_status().is_err() {
            eprintln!("SKIPPED: no protection keys here");
            return;
        }
        let default = pkru::read();
        // SAFETY: installs an async-signal-safe handler (one atomic store).
        unsafe { libc::signal(libc::SIGUSR1, pkru::handler as *const () as libc::sighandler_t) };
        pkru::write(0);
        // SAFETY: raise delivers the signal to this thread before it returns.
        unsafe { libc::raise(libc::SIGUSR1) };
        pkru::write(default);
        let seen = pkru::IN_HANDLER.load(std::sync::atomic::Ordering::SeqCst);
        println!("default {default:#x}, in the handler {seen:#x}");
        assert_eq!(seen, default, "the handler did not run with the default PKRU");
    }
}

child_test! {
    /// "no log line, error or `Debug` output contains a byte of a secret":
    /// the `Debug` of a secret and of its reader, on every layout and
    /// backend, and the errors an access can return.
    fn debug_output_has_no_secret_bytes() {
        let secret = *b"TOPSECRETVALUE42";
        let forms = [
            "TOPSECRET".to_string(),
            format!("{:?}", &secret[..4]),
            secret[..4].iter().map(|b| format!("{b:02x}")).collect::<String>(),
            secret[..4].iter().map(|b| format!("{b:02X}")).collect::<String>(),
        ];
        for opts in [
            Options::default(),
            Options::default().layout(Layout::Guarded),
            Options::default().layout(Layout::Pooled),
            Options::default().backend(Backend::Anonymous),
        ] {
            let s = ProtectedFactory::new(opts).unwrap().new(&mut secret.clone()).unwrap();
            let mut text = format!("{s:?} {:?}", s.reader());
            text += &format!("{:?}", s.with_bytes(|_| s.close()).unwrap());
            s.close().unwrap();
            text += &format!("{:?} {}", s.with_bytes(|_| ()).unwrap_err(), s.with_bytes(|_| ()).unwrap_err());
            for form in &forms {
                assert!(!text.contains(form.as_str()), "{opts:?}: {form} in {text}");
            }
        }
    }
}

/// The memory file's descriptor in this process, if open.
fn memory_file_fd() -> Option<i32> {
    std::fs::read_dir("/proc/self/fd")
        .ok()?
        .flatten()
        .find_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?;
            link.to_string_lossy()
                .starts_with("/memfd:securememory")
                .then(|| e.file_name().to_str()?.parse().ok())?
        })
}

#[cfg(target_arch = "x86_64")]
child_test! {
    /// "Fork, exactly": in a child of a raw `fork` system call, a secret's
    /// queries (`len`, `is_closed`, `access_path`, `backend`) do not notice
    /// the fork (the memory file's descriptor stays open); its first access
    /// does: `Error::Forked`, and the descriptor is closed.
    fn raw_fork_child_notices_at_an_access_not_at_a_query() {
        let s = ProtectedFactory::default().new(&mut filled(32)).unwrap();
        let fd = memory_file_fd().expect("the memory file is open");
        // SAFETY: a raw fork; the child runs the checks below and `_exit`s.
        let pid = unsafe { libc::syscall(libc::SYS_fork) } as libc::pid_t;
        if pid == 0 {
            let code = (|| {
                let _ = (s.len(), s.is_closed(), s.access_path(), s.backend());
                // SAFETY: fcntl(F_GETFD) only asks whether `fd` is open.
                if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                    return 2;
                }
                if !matches!(s.with_bytes(|_| ()), Err(Error::Forked)) {
                    return 3;
                }
                // SAFETY: as above.
                if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
                    return 4;
                }
                0
            })();
            // SAFETY: ends the raw fork child without running the parent's exit code.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
        let mut status = 0;
        // SAFETY: waits for the child made above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "2: closed by a query, 3: not Forked, 4: left open");
        assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), filled(32));
    }
}

/// Every file the README and ARCHITECTURE.md link to (a test named as a
/// proof, a source file) exists: a renamed or split file leaves no claim
/// pointing at nothing.
#[test]
fn every_file_the_docs_link_to_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut missing = Vec::new();
    for doc in ["README.md", "ARCHITECTURE.md"] {
        let text = std::fs::read_to_string(root.join(doc)).expect("read the doc");
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let end = rest.find([')', '#']).unwrap_or(rest.len());
            let target = &rest[..end];
            let local = target.starts_with("securememory/")
                || target.starts_with("cli/")
                || target.starts_with(".ci/");
            if local && !root.join(target).exists() {
                missing.push(format!("{doc}: {target}"));
            }
        }
    }
    assert!(missing.is_empty(), "links to missing files: {missing:#?}");
}
