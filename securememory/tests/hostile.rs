//! Hostile environments (issue 15): each refusal a deployment can impose is
//! reported as itself, and every failure path keeps the books right. Each
//! test runs in a child process of its own: it fills the process's own
//! mappings, lowers its own limits or installs a seccomp filter; nothing
//! changes the system's settings.

#[macro_use]
mod common;

use std::fs::File;
use std::os::fd::AsRawFd;

use common::child::in_worker;
use common::procfs::{status_field, vm_lck_kib};
use common::rlimit::{memlock, set_memlock, CAP_IPC_LOCK};
use securememory::test_hooks::{clear_faults, fail_next, FaultOp};
use securememory::{
    stats, Backend, Error, Layout, Options, PoolProtection, ProcessLimit, ProtectedFactory, Secret,
    SecretFactory,
};

fn page() -> usize {
    common::page_size()
}

/// Whether this kernel has `memfd_secret`, asked with the raw system call
/// so the library's own probe is not run (and nothing is remembered).
fn kernel_has_memfd_secret(what: &str) -> bool {
    // SAFETY: memfd_secret takes a flags word; the descriptor is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC as libc::c_ulong) };
    if fd < 0 {
        eprintln!(
            "SKIPPED: {what}: memfd_secret unavailable on this machine: {}",
            std::io::Error::last_os_error()
        );
        return false;
    }
    // SAFETY: the descriptor was just returned to us.
    unsafe { libc::close(fd as libc::c_int) };
    true
}

// ---- the map count: fill this process's own mappings ----

/// One-page anonymous mappings made until the kernel refuses another
/// (`vm.max_map_count`); neighbours alternate protections so none merge.
struct Filler(Vec<usize>);

impl Filler {
    fn fill() -> Filler {
        let max: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .expect("read vm.max_map_count")
            .trim()
            .parse()
            .expect("a number");
        // Allocate and free some heap first, so that the allocator's arena
        // has room without a new mapping while the process has none left.
        drop((0..256).map(|_| vec![1u8; 4096]).collect::<Vec<_>>());
        let mut maps = Vec::with_capacity(max + 16);
        loop {
            let prot = if maps.len() % 2 == 0 {
                libc::PROT_READ
            } else {
                libc::PROT_NONE
            };
            // SAFETY: a fresh private mapping at an address the kernel picks.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    page(),
                    prot,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                let e = std::io::Error::last_os_error();
                assert_eq!(e.raw_os_error(), Some(libc::ENOMEM), "filling: {e}");
                break;
            }
            maps.push(p as usize);
            assert!(maps.len() <= max + 1, "more mappings than vm.max_map_count");
        }
        Filler(maps)
    }

    /// Give back `n` of the filler mappings.
    fn release(&mut self, n: usize) {
        for _ in 0..n {
            let p = self.0.pop().expect("a filler mapping");
            // SAFETY: one of our own filler mappings, unmapped once.
            assert_eq!(unsafe { libc::munmap(p as *mut libc::c_void, page()) }, 0);
        }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        let n = self.0.len();
        self.release(n);
    }
}

/// The ranges of the memory file mapped in this process, as (file offset,
/// length), from `/proc/self/maps`.
fn memfd_ranges() -> Vec<(u64, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines()
        .filter(|l| l.contains("memfd:securememory"))
        .map(|l| {
            let mut f = l.split_whitespace();
            let (lo, hi) = f.next().unwrap().split_once('-').unwrap();
            let len = u64::from_str_radix(hi, 16).unwrap() - u64::from_str_radix(lo, 16).unwrap();
            let off = u64::from_str_radix(f.nth(1).unwrap(), 16).unwrap();
            (off, len)
        })
        .collect()
}

/// No range of the memory file is mapped twice.
fn assert_no_range_mapped_twice(what: &str) {
    let mut ranges = memfd_ranges();
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(
            w[0].0 + w[0].1 <= w[1].0,
            "{what}: file range {:#x}+{:#x} mapped twice (overlaps {:#x}+{:#x})",
            w[1].0,
            w[1].1,
            w[0].0,
            w[0].1
        );
    }
}

/// The kernel's count of locked memory equals the library's.
fn assert_books_match(what: &str) {
    let kernel = vm_lck_kib() * 1024;
    let library = stats().bytes_locked;
    assert_eq!(
        kernel, library,
        "{what}: VmLck {kernel} bytes, the library counts {library}"
    );
}

child_test! {
    /// Issue 15, item 1: closed file offsets are reused in reverse order, so
    /// three new secrets get one merged mapping; at `vm.max_map_count`
    /// closing the middle one needs a split and `munmap` fails. `close`
    /// reports it (`Error::UnmapFailed` naming the map count), VmLck equals
    /// `stats().bytes_locked` (the page is still locked and still counted),
    /// a later secret does not get the range (no range of the memory file
    /// mapped twice), and once mappings are free again a later release
    /// unmaps it and the books still match.
    fn refused_unmap_is_reported_and_the_books_stay_right() {
        // Every close here unmaps (the refusal is of a munmap).
        securememory::test_hooks::keep_ready_pages(false);
        let f = ProtectedFactory::default();
        let warm = f.new(&mut [1u8; 32]).unwrap();
        assert_eq!(warm.with_bytes(|b| b[0]).unwrap(), 1);
        let first: Vec<Secret> = (0..3).map(|i| f.new(&mut [i as u8; 32]).unwrap()).collect();
        for s in &first {
            s.close().unwrap();
        }
        drop(first);
        let t: Vec<Secret> = (0..3).map(|i| f.new(&mut [10 + i as u8; 32]).unwrap()).collect();
        let addrs: Vec<usize> = t.iter().map(securememory::test_hooks::data_address).collect();
        let merged = common::procfs::mapping_at(addrs[0]).expect("mapped");
        let (lo, hi) = (*addrs.iter().min().unwrap(), *addrs.iter().max().unwrap());
        assert!(
            merged.start <= lo && hi < merged.end,
            "the three secrets did not merge into one mapping: {addrs:#x?} in {}",
            merged.line
        );
        assert_books_match("before filling");

        let mut filler = Filler::fill();
        let r = t[1].close();
        let lck = vm_lck_kib() * 1024;
        let locked = stats().bytes_locked;
        filler.release(16);
        println!("close of the middle secret at the map-count limit: {r:?}");
        let e = r.expect_err("close returned Ok although the kernel kept the page mapped");
        assert!(
            matches!(&e, Error::UnmapFailed { limit: Some(ProcessLimit::MapCount { .. }), source, .. }
                if source.raw_os_error() == Some(libc::ENOMEM)),
            "{e:?}"
        );
        assert!(e.to_string().contains("vm.max_map_count"), "{e}");
        assert!(t[1].is_closed());
        assert!(matches!(t[1].with_bytes(|_| ()), Err(Error::Closed)));
        assert_eq!(lck, locked, "VmLck {lck} bytes, the library counts {locked}");

        // A later secret does not get the range that is still mapped.
        let later = f.new(&mut [42u8; 32]).unwrap();
        assert_no_range_mapped_twice("after a refused unmap");
        assert_eq!(later.with_bytes(|b| b.to_vec()).unwrap(), vec![42u8; 32]);
        assert_eq!(t[0].with_bytes(|b| b[0]).unwrap(), 10);
        assert_eq!(t[2].with_bytes(|b| b[0]).unwrap(), 12);
        assert_books_match("after a refused unmap");

        // With mappings to spare, the next release unmaps the stranded page.
        t[0].close().unwrap();
        assert_books_match("after the retry");
        let mapped: u64 = memfd_ranges().iter().map(|r| r.1).sum();
        assert_eq!(mapped, 3 * page() as u64, "warm, t[2] and later only");
        drop(filler);
    }
}

child_test! {
    /// Issue 15, item 2: at `vm.max_map_count` every backend and layout is
    /// refused with `Error::LimitReached` naming the map count and its fix,
    /// never `LockFailed` and never `ulimit -l`.
    fn map_count_refusal_names_the_map_count() {
        let mut configs = vec![
            ("memfd page", Options::default()),
            ("memfd guarded", Options::default().layout(Layout::Guarded)),
            ("anonymous", Options::default().backend(Backend::Anonymous)),
            (
                "pooled",
                Options::default()
                    .layout(Layout::Pooled)
                    .pool_protection(PoolProtection::ProtNone),
            ),
        ];
        if kernel_has_memfd_secret("map count with Backend::MemfdSecret") {
            configs.push(("memfd_secret", Options::default().backend(Backend::MemfdSecret)));
        }
        let factories: Vec<_> = configs
            .iter()
            .map(|(name, o)| (*name, ProtectedFactory::new(*o).unwrap()))
            .collect();
        // The memory file and this thread's scratch buffer exist already.
        let warm = factories[0].1.new(&mut [1u8; 32]).unwrap();
        assert_eq!(warm.with_bytes(|b| b[0]).unwrap(), 1);
        let filler = Filler::fill();
        let results: Vec<_> = factories
            .iter()
            .map(|(name, f)| (*name, f.new(&mut [7u8; 32]).map(drop)))
            .collect();
        drop(filler);
        for (name, r) in results {
            let e = r.expect_err(name);
            println!("{name}: {e}");
            assert!(
                matches!(&e, Error::LimitReached { limit: ProcessLimit::MapCount { .. }, .. }),
                "{name}: {e:?}"
            );
            let msg = e.to_string();
            for needle in ["vm.max_map_count", "sysctl", "Layout::Pooled"] {
                assert!(msg.contains(needle), "{name}: no {needle:?}: {msg}");
            }
            assert!(!msg.contains("ulimit -l"), "{name}: {msg}");
        }
        assert_books_match("after the refusals");
    }
}

child_test! {
    /// Issue 15, item 2: past `RLIMIT_AS` every backend is refused with
    /// `Error::LimitReached` naming the address-space limit and its fix.
    fn address_space_refusal_names_rlimit_as() {
        let mut configs = vec![
            ("memfd page", Options::default()),
            ("anonymous", Options::default().backend(Backend::Anonymous)),
        ];
        if kernel_has_memfd_secret("address space with Backend::MemfdSecret") {
            configs.push(("memfd_secret", Options::default().backend(Backend::MemfdSecret)));
        }
        let factories: Vec<_> = configs
            .iter()
            .map(|(name, o)| (*name, ProtectedFactory::new(*o).unwrap()))
            .collect();
        let warm = factories[0].1.new(&mut [1u8; 32]).unwrap();
        assert_eq!(warm.with_bytes(|b| b[0]).unwrap(), 1);
        let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: valid rlimit structs for the kernel to fill and read.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut old), 0);
            let size: u64 = status_field("/proc/self/status", "VmSize")
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap();
            let low = libc::rlimit { rlim_cur: size * 1024 + (4 << 20), rlim_max: old.rlim_max };
            assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &low), 0);
        }
        let big = 16 << 20;
        let results: Vec<_> = factories
            .iter()
            .map(|(name, f)| (*name, f.create_random(big).map(drop)))
            .collect();
        // SAFETY: as above; raising the soft limit back to where it was.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &old) }, 0);
        for (name, r) in results {
            let e = r.expect_err(name);
            println!("{name}: {e}");
            assert!(
                matches!(&e, Error::LimitReached { limit: ProcessLimit::AddressSpace { .. }, .. }),
                "{name}: {e:?}"
            );
            let msg = e.to_string();
            for needle in ["RLIMIT_AS", "ulimit -v", "LimitAS="] {
                assert!(msg.contains(needle), "{name}: no {needle:?}: {msg}");
            }
            assert!(!msg.contains("ulimit -l"), "{name}: {msg}");
        }
        assert_books_match("after the refusals");
    }
}

// ---- descriptors ----

/// Lower `RLIMIT_NOFILE` and open files until the process has no
/// descriptor left; dropping the files frees them.
fn exhaust_descriptors() -> Vec<File> {
    common::rlimit::lower_nofile(256);
    let mut files = Vec::with_capacity(256);
    loop {
        match File::open("/dev/null") {
            Ok(f) => files.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
    }
    assert!(files.iter().all(|f| f.as_raw_fd() >= 0));
    files
}

child_test! {
    /// Issue 15, item 3: with descriptors exhausted at first use, the
    /// `memfd_secret` probe fails with EMFILE. That is reported as a
    /// descriptor limit (`Error::LimitReached`), for `MemfdSecret` and for
    /// `Auto` alike, and not remembered: once descriptors are free again,
    /// `MemfdSecret` works and `Auto` resolves to it.
    fn exhausted_descriptors_are_not_remembered() {
        if !kernel_has_memfd_secret("descriptors exhausted at the memfd_secret probe") {
            return;
        }
        let files = exhaust_descriptors();
        let status = securememory::memfd_secret_status();
        let explicit = ProtectedFactory::new(Options::default().backend(Backend::MemfdSecret));
        let auto = ProtectedFactory::new(Options::default().backend(Backend::Auto));
        drop(files);
        println!("with no descriptor left: status {status:?}");
        let msg = status.expect_err("probe succeeded without a descriptor");
        for needle in ["RLIMIT_NOFILE", "ulimit -n", "--ulimit nofile", "LimitNOFILE="] {
            assert!(msg.contains(needle), "no {needle:?}: {msg}");
        }
        for (name, r) in [("MemfdSecret", explicit), ("Auto", auto)] {
            let e = r.expect_err(name);
            assert!(
                matches!(&e, Error::LimitReached { limit: ProcessLimit::Descriptors { .. }, source, .. }
                    if source.raw_os_error() == Some(libc::EMFILE)),
                "{name}: {e:?}"
            );
        }
        // Descriptors free again: nothing was remembered.
        assert_eq!(securememory::memfd_secret_status(), Ok(()));
        assert_eq!(Backend::Auto.resolve(), Backend::MemfdSecret);
        let f = ProtectedFactory::new(Options::default().backend(Backend::MemfdSecret))
            .expect("MemfdSecret after descriptors were freed");
        let s = f.new(&mut [5u8; 32]).unwrap();
        assert_eq!(s.with_bytes(|b| b[0]).unwrap(), 5);
        s.close().unwrap();
        let auto = ProtectedFactory::new(Options::default().backend(Backend::Auto)).unwrap();
        assert_eq!(auto.options().backend, Backend::MemfdSecret);
    }
}

// ---- the memlock limit cannot be read ----

const LIMIT: u64 = 64 * 1024;

fn unknown_limit_worker() {
    common::rlimit::no_ipc_lock_soft_limit(LIMIT);
    let eperm = libc::EPERM;
    common::seccomp::deny(&[(libc::SYS_prlimit64, eperm), (libc::SYS_getrlimit, eperm)])
        .expect("install the seccomp filter");
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit struct for the kernel to fill.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    assert_ne!(read, 0, "the filter did not deny reading the limit");
    assert!(securememory::system::report().memlock_unknown);

    let f = ProtectedFactory::new(
        Options::default()
            .layout(Layout::Pooled)
            .pool_protection(PoolProtection::ProtNone),
    )
    .unwrap();
    // Read one first: this thread's scratch buffer is locked memory too,
    // taken at the first read (none is left once the pool has it all).
    let first = f.new(&mut [0u8; 32]).unwrap();
    assert_eq!(first.with_bytes(|b| b[0]).unwrap(), 0);
    let mut held = vec![first];
    let err = loop {
        match f.new(&mut [held.len() as u8; 32]) {
            Ok(s) => held.push(s),
            Err(e) => break e,
        }
        assert!(
            held.len() < 100_000,
            "never refused under a {LIMIT}-byte limit"
        );
    };
    println!(
        "{} pooled secrets under an unreadable {LIMIT}-byte limit, then: {err}",
        held.len()
    );
    assert!(!held.is_empty(), "not one pooled secret: {err}");
    for (i, s) in held.iter().enumerate().step_by(97) {
        assert_eq!(s.with_bytes(|b| b[0]).unwrap(), i as u8);
    }
    let Error::LockFailed { report, .. } = &err else {
        panic!("expected LockFailed, got {err:?}");
    };
    assert!(report.limit_unknown, "{report:?}");
    let msg = err.to_string();
    assert!(msg.contains("unknown"), "{msg}");
    assert!(!msg.contains("unlimited"), "{msg}");
    assert_books_match("at the refusal");
    drop(held);
    assert_books_match("after closing");
}

#[test]
fn unreadable_memlock_limit_is_unknown_and_the_kernel_decides() {
    //! Issue 15, item 5: with `prlimit64` denied by seccomp the limit is
    //! unknown, not unlimited: the pool falls back to one-page chunks and
    //! makes secrets under a 64 KiB limit, and the kernel's refusal says the
    //! limit is unknown.
    const TEST: &str = "unreadable_memlock_limit_is_unknown_and_the_kernel_decides";
    in_worker(TEST, "unknown-limit", &[CAP_IPC_LOCK], unknown_limit_worker);
}

// ---- a failed wipe is a failed wipe ----

child_test! {
    /// Issue 15, item 6: when writing zeros at close fails, `close` says the
    /// wipe failed (`Error::WipeFailed`), not that a copy out failed.
    fn failed_wipe_write_is_reported_as_a_wipe() {
        for opts in [
            Options::default(),
            Options::default()
                .layout(Layout::Pooled)
                .pool_protection(PoolProtection::ProtNone),
        ] {
            let f = ProtectedFactory::new(opts).unwrap();
            let s = f.new(&mut [3u8; 32]).unwrap();
            fail_next(FaultOp::Pwrite, 0, libc::EIO);
            let r = s.close();
            clear_faults();
            let e = r.expect_err("close after a failed wipe write");
            let msg = e.to_string();
            println!("{:?}: {msg}", opts.layout);
            assert!(matches!(&e, Error::WipeFailed(io) if io.raw_os_error() == Some(libc::EIO)), "{e:?}");
            assert!(!msg.contains("copy the secret out"), "{msg}");
            assert!(msg.contains("zeros"), "{msg}");
        }
    }
}

// ---- one denied system call at a time ----

/// The system calls a container's seccomp profile may deny, by name.
const DENIABLE: [(&str, libc::c_long); 15] = [
    ("memfd_secret", libc::SYS_memfd_secret),
    ("memfd_create", libc::SYS_memfd_create),
    ("mlock", libc::SYS_mlock),
    ("mlock2", libc::SYS_mlock2),
    ("madvise", libc::SYS_madvise),
    ("mprotect", libc::SYS_mprotect),
    ("pkey_alloc", libc::SYS_pkey_alloc),
    ("pkey_mprotect", libc::SYS_pkey_mprotect),
    ("prctl", libc::SYS_prctl),
    ("prlimit64", libc::SYS_prlimit64),
    ("fallocate", libc::SYS_fallocate),
    ("pwrite64", libc::SYS_pwrite64),
    ("pread64", libc::SYS_pread64),
    ("getrandom", libc::SYS_getrandom),
    ("capget", libc::SYS_capget),
];

/// The configurations tried under each denial.
fn denial_configs() -> Vec<(&'static str, Options)> {
    vec![
        ("memfd-page", Options::default()),
        ("memfd-guarded", Options::default().layout(Layout::Guarded)),
        (
            "pooled",
            Options::default()
                .layout(Layout::Pooled)
                .pool_protection(PoolProtection::ProtNone),
        ),
        (
            "pooled-pkey",
            Options::default()
                .layout(Layout::Pooled)
                .pool_protection(PoolProtection::ProtectionKey),
        ),
        ("anonymous", Options::default().backend(Backend::Anonymous)),
        (
            "memfd_secret",
            Options::default().backend(Backend::MemfdSecret),
        ),
        ("auto", Options::default().backend(Backend::Auto)),
    ]
}

/// The variant of an error (its `Debug` up to the first brace or parenthesis).
/// A `LockFailed` whose report says a filter denied it is `LockFailed(denied)`.
fn variant(e: &Error) -> String {
    if let Error::LockFailed { report, .. } = e {
        if report.denied {
            return "LockFailed(denied)".into();
        }
    }
    let d = format!("{e:?}");
    d.split(['(', ' ', '{']).next().unwrap_or("").to_string()
}

/// One configuration under the filter: the factory, a secret from bytes
/// and one from the CSPRNG, a read and a close of each. Returns what
/// happened as `step:Variant` or `ok`, and checks that nothing created is
/// readable at rest.
fn try_config(opts: Options) -> String {
    let f = match ProtectedFactory::new(opts) {
        Ok(f) => f,
        Err(e) => return format!("factory:{}", variant(&e)),
    };
    let mut out = Vec::new();
    let made = [f.new(&mut [9u8; 32]), f.create_random(32)];
    for (i, s) in made.into_iter().enumerate() {
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                out.push(format!("create{i}:{}", variant(&e)));
                continue;
            }
        };
        if let Ok(readable) = s.is_readable_now() {
            assert!(!readable, "a secret is readable at rest");
        }
        match s.with_bytes(|b| b.len()) {
            Ok(32) => {}
            Ok(n) => panic!("read {n} bytes"),
            Err(e) => out.push(format!("read{i}:{}", variant(&e))),
        }
        if !s.is_closed() {
            if let Ok(readable) = s.is_readable_now() {
                assert!(!readable, "a secret is readable at rest after a read");
            }
        }
        if let Err(e) = s.close() {
            out.push(format!("close{i}:{}", variant(&e)));
        }
    }
    if out.is_empty() {
        format!("ok({:?})", f.options().backend)
    } else {
        out.join(",")
    }
}

fn denied_worker(role: &str) {
    let (call, errno) = role.split_once(':').expect("call:errno");
    let errno: i32 = errno.parse().expect("an errno");
    let (_, nr) = *DENIABLE
        .iter()
        .find(|(n, _)| *n == call)
        .expect("a known call");
    common::seccomp::deny(&[(nr, errno)]).expect("install the seccomp filter");
    for (name, opts) in denial_configs() {
        let outcome = try_config(opts);
        println!("DENIED {name} {outcome}");
    }
}

/// Outcomes of each configuration with `call` denied with `errno`, from a
/// child of its own.
fn outcomes_with_denied(call: &str, errno: i32) -> Vec<(String, String)> {
    let test = "each_denied_call_is_a_typed_error_or_a_fallback";
    let run = common::child::Child::new(test, &format!("deny:{call}:{errno}")).run();
    run.assert_done(call);
    run.stdout
        .lines()
        .filter_map(|l| l.split_once("DENIED ").map(|(_, rest)| rest))
        .map(|l| {
            let (c, o) = l.split_once(' ').unwrap();
            (c.to_string(), o.to_string())
        })
        .collect()
}

/// What a configuration does with `call` denied, on a machine with
/// `memfd_secret` and protection keys: `ok(<backend>)`, or the failing steps
/// and their error variants.
fn expected(call: &str, config: &str) -> &'static str {
    const CREATE_UNSUPPORTED: &str = "create0:Unsupported,create1:Unsupported";
    match (call, config) {
        // The scratch buffer (copy path) and anonymous pages cannot be
        // locked: refused, naming the filter, never read unlocked.
        ("mlock", "memfd-page" | "memfd-guarded") => {
            "read0:LockFailed(denied),read1:LockFailed(denied)"
        }
        ("mlock", "pooled" | "pooled-pkey") => {
            "read0:LockFailed(denied),create1:LockFailed(denied)"
        }
        ("mlock", "anonymous") => "create0:LockFailed(denied),create1:LockFailed(denied)",
        ("memfd_secret", "memfd_secret") => "factory:Unsupported",
        ("memfd_secret", "auto") => "ok(Memfd)",
        ("memfd_create", "memfd-page" | "memfd-guarded" | "pooled" | "pooled-pkey") => {
            CREATE_UNSUPPORTED
        }
        ("madvise", _) => "create0:AdviseFailed,create1:AdviseFailed",
        ("mprotect", _) => "create0:ProtectFailed,create1:ProtectFailed",
        ("pkey_alloc", "pooled-pkey") => "factory:Unsupported",
        ("pkey_mprotect", "pooled-pkey") => "create0:ProtectFailed,create1:ProtectFailed",
        ("pwrite64", "memfd-page" | "memfd-guarded") => "close0:WipeFailed,close1:WipeFailed",
        ("pwrite64", "pooled") => "create0:AccessFailed,create1:AccessFailed",
        ("pread64", "memfd-page" | "pooled") => "read0:AccessFailed,read1:AccessFailed",
        ("pread64", "memfd-guarded") => {
            "read0:AccessFailed,close0:AccessFailed,read1:AccessFailed,close1:AccessFailed"
        }
        (_, "memfd-page" | "memfd-guarded" | "pooled" | "pooled-pkey") => "ok(Memfd)",
        (_, "anonymous") => "ok(Anonymous)",
        (_, "memfd_secret" | "auto") => "ok(MemfdSecret)",
        _ => panic!("no expectation for {call} {config}"),
    }
}

#[test]
fn each_denied_call_is_a_typed_error_or_a_fallback() {
    //! Issue 15: each system call a seccomp profile may deny, one at a time
    //! (EPERM, then ENOSYS), in a child of its own, across backends and
    //! layouts: no panic, crash or hang; nothing created is readable at
    //! rest; each outcome is the typed error or the fallback of
    //! [`expected`]. `getrandom`, `prctl`, `prlimit64` (as root),
    //! `fallocate`, `capget` and `mlock2` cost nothing.
    if let Some(role) = common::child::role() {
        denied_worker(role.strip_prefix("deny:").expect("a deny role"));
        common::child::done();
        return;
    }
    let secret_ok = kernel_has_memfd_secret("denied calls with memfd_secret and auto");
    let pkeys_ok = securememory::protection_keys_status().is_ok();
    if !pkeys_ok {
        eprintln!("SKIPPED: denied calls with pooled-pkey: no protection keys here");
    }
    for errno in [libc::EPERM, libc::ENOSYS] {
        for (call, _) in DENIABLE {
            for (config, outcome) in outcomes_with_denied(call, errno) {
                println!("{errno:2} {call:14} {config:14} {outcome}");
                let skip = (!secret_ok && (config == "memfd_secret" || config == "auto"))
                    || (!pkeys_ok && config == "pooled-pkey");
                if !skip {
                    let want = expected(call, &config);
                    assert_eq!(outcome, want, "{call} denied with errno {errno}: {config}");
                }
            }
        }
    }
}

// ---- /proc hidden ----

child_test! {
    /// `/proc` hidden (an empty file system mounted over it in a mount
    /// namespace of this child's own): every configuration creates, reads
    /// and closes as usual; only diagnostics are lost
    /// (`is_readable_now` is an error).
    fn hidden_proc_costs_only_diagnostics() {
        // SAFETY: unshare and mount with valid C strings; only this child's
        // own new mount namespace changes.
        let hidden = unsafe {
            libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(c"none".as_ptr(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) == 0
                && libc::mount(c"none".as_ptr(), c"/proc".as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()) == 0
        };
        if !hidden {
            eprintln!("SKIPPED: hidden /proc: cannot mount over /proc here: {}", std::io::Error::last_os_error());
            return;
        }
        assert!(std::fs::metadata("/proc/self/maps").is_err(), "/proc still visible");
        for (name, opts) in denial_configs() {
            let outcome = try_config(opts);
            println!("/proc hidden: {name}: {outcome}");
            if name == "pooled-pkey" && securememory::protection_keys_status().is_err() {
                continue;
            }
            if name == "memfd_secret" && securememory::memfd_secret_status().is_err() {
                continue;
            }
            assert!(outcome.starts_with("ok("), "{name}: {outcome}");
        }
        let s = ProtectedFactory::default().new(&mut [1u8; 32]).unwrap();
        assert!(s.is_readable_now().is_err());
    }
}

// ---- the memlock limit lowered at run time ----

fn lowered_worker() {
    common::rlimit::no_ipc_lock_soft_limit(LIMIT);
    let (_, hard) = memlock();
    let f = ProtectedFactory::default();
    let held: Vec<Secret> = (0..4).map(|i| f.new(&mut [i as u8; 32]).unwrap()).collect();
    assert_eq!(held[0].with_bytes(|b| b[0]).unwrap(), 0);
    let low = 4 * page() as u64;
    assert!(stats().bytes_locked > low);
    set_memlock(Some(low), hard);
    let e = f
        .new(&mut [9u8; 32])
        .expect_err("created past the lowered limit");
    println!("after lowering the limit to {low}: {e}");
    let Error::LockFailed { report, .. } = &e else {
        panic!("expected LockFailed, got {e:?}");
    };
    assert_eq!(
        report.soft,
        Some(low),
        "the report names the limit now in force"
    );
    for (i, s) in held.iter().enumerate() {
        assert_eq!(s.with_bytes(|b| b[0]).unwrap(), i as u8, "held secret {i}");
    }
    assert_books_match("after the refusal");
    for s in &held {
        s.close().unwrap();
    }
    assert_books_match("after closing");
}

#[test]
fn memlock_limit_lowered_at_run_time() {
    //! The memlock limit lowered under a running process (no
    //! `CAP_IPC_LOCK`): the next request is refused with `LockFailed`
    //! naming the new limit; the secrets already held stay readable and
    //! close; VmLck matches `stats()` throughout.
    const TEST: &str = "memlock_limit_lowered_at_run_time";
    in_worker(TEST, "lowered", &[CAP_IPC_LOCK], lowered_worker);
}

// ---- a denied mlock is not the memlock limit ----

child_test! {
    /// A seccomp filter denying `mlock` (EPERM) while the limit allows
    /// locking: an anonymous secret is refused with `LockFailed` whose
    /// report says it was denied (`report.denied`) and whose message names
    /// the filter, not `ulimit -l`.
    fn denied_mlock_is_not_blamed_on_the_limit() {
        common::seccomp::deny(&[(libc::SYS_mlock, libc::EPERM)]).expect("install the seccomp filter");
        let f = ProtectedFactory::new(Options::default().backend(Backend::Anonymous)).unwrap();
        let e = f.new(&mut [1u8; 32]).map(drop).expect_err("locked although mlock is denied");
        println!("{e}");
        let Error::LockFailed { report, .. } = &e else {
            panic!("expected LockFailed, got {e:?}");
        };
        assert!(report.denied, "{report:?}");
        let msg = e.to_string();
        assert!(msg.contains("seccomp") && msg.contains("would not help"), "{msg}");
        assert!(!msg.contains("ulimit -l"), "{msg}");
        assert_books_match("after the refusal");
    }
}
