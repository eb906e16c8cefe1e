//! Guarantees specific to `PoolProtection::ProtectionKey`: pool pages are
//! read-write in the page tables but tagged with a key that no thread's PKRU
//! opens outside the library's own leaf copies.
//!
//! Each test runs in a child (a re-executed test binary, or a `fork`), and
//! each has a control that shows it can see the failure it looks for. Where
//! protection keys do not work, every test prints a `SKIPPED:` line.

mod common;
mod support_child;
mod support_proc;

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use common::child::{self, Child, Run};
use common::configs::protection_keys_or_skip;
use securememory::{test_hooks, Layout, Options, PoolProtection, ProtectedFactory, SecretFactory};
use support_child::{announce_fatal_access, assert_segv_after_marker, known_bytes, no_core_file};
use support_proc::fork_and_wait;

/// `si_code` of a SIGSEGV: page present but protection denied / key denied
/// (asm-generic/siginfo.h).
const SEGV_ACCERR: i32 = 2;
const SEGV_PKUERR: i32 = 4;

fn pooled(protection: PoolProtection) -> ProtectedFactory {
    ProtectedFactory::new(
        Options::default()
            .layout(Layout::Pooled)
            .pool_protection(protection),
    )
    .unwrap_or_else(|e| panic!("pooled factory with {protection:?}: {e}"))
}

/// The permissions and `ProtectionKey:` value of the `/proc/self/smaps`
/// entry covering `addr`.
fn smaps_entry(addr: usize) -> (String, Option<u32>) {
    let text = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut found: Option<(String, Option<u32>)> = None;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let first = parts.next().unwrap_or("");
        let range = first.split_once('-').and_then(|(lo, hi)| {
            Some((
                usize::from_str_radix(lo, 16).ok()?,
                usize::from_str_radix(hi, 16).ok()?,
            ))
        });
        if let Some((lo, hi)) = range {
            if found.is_some() {
                break;
            }
            if lo <= addr && addr < hi {
                found = Some((parts.next().unwrap_or("").to_string(), None));
            }
        } else if let (Some(entry), Some(key)) =
            (found.as_mut(), line.strip_prefix("ProtectionKey:"))
        {
            entry.1 = key.trim().parse().ok();
        }
    }
    found.unwrap_or_else(|| panic!("no smaps entry covers {addr:#x}"))
}

// ---- A SIGSEGV reporter: writes the fault's si_code, then dies of it. ----

static EXPECTED_ADDR: AtomicUsize = AtomicUsize::new(0);

extern "C" fn report_segv(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to a SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    let mut head = *b"SEGV-CODE=?";
    if (0..10).contains(&code) {
        head[10] = b'0' + code as u8;
    }
    let tail: &[u8] = if addr == EXPECTED_ADDR.load(Ordering::Relaxed) {
        b" ADDR=slot\n"
    } else {
        b" ADDR=other\n"
    };
    for part in [&head[..], tail] {
        // SAFETY: write(2) is async-signal-safe; `part` is valid for its length.
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
    // Returning re-runs the faulting load; SA_RESETHAND restored the default
    // action, so the process now dies by SIGSEGV.
}

/// In a child about to fault at `addr`: report the fault's `si_code` on
/// stderr before dying of it (one shot, `SA_RESETHAND`).
fn report_segv_at(addr: usize) {
    EXPECTED_ADDR.store(addr, Ordering::Relaxed);
    // SAFETY: an all-zero sigaction is valid; we fill handler, flags and mask.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = report_segv as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND;
    // SAFETY: `sa` is ours; sigaction only reads it.
    let r = unsafe {
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut())
    };
    assert_eq!(r, 0, "sigaction: {}", std::io::Error::last_os_error());
}

fn assert_segv_code(run: &Run, code: i32, what: &str) {
    let want = format!("SEGV-CODE={code} ADDR=slot");
    assert!(
        run.stderr.contains(&want),
        "{what}: expected a fault with {want}\n{}",
        run.describe()
    );
}

// ---- 1. The pool's pages carry the key. ----

#[test]
fn key_tags_the_pool_pages() {
    const TEST: &str = "key_tags_the_pool_pages";
    if !protection_keys_or_skip(TEST) {
        return;
    }
    child::in_child(TEST, || {
        let known = known_bytes();
        let keyed = pooled(PoolProtection::ProtectionKey)
            .new(&mut known.clone())
            .expect("create keyed");
        let addr = test_hooks::data_address(&keyed);
        let (perms, key) = smaps_entry(addr);
        assert!(perms.starts_with("rw"), "keyed pool VMA is {perms}, not rw");
        assert!(
            key.is_some_and(|k| k != 0),
            "keyed pool VMA has protection key {key:?}, want a non-zero one"
        );
        assert!(
            !keyed.is_readable_now().unwrap(),
            "keyed slot readable by this thread at rest"
        );
        assert!(keyed.with_bytes(|b| b == known).unwrap(), "keyed bytes");

        // Control: the PROT_NONE pool's pages are not readable at all.
        let plain = pooled(PoolProtection::ProtNone)
            .new(&mut known.clone())
            .expect("create PROT_NONE");
        let (perms, key) = smaps_entry(test_hooks::data_address(&plain));
        assert!(
            perms == "---p" || perms == "---s",
            "PROT_NONE pool VMA is {perms}"
        );
        assert_eq!(key.unwrap_or(0), 0, "PROT_NONE pool VMA has a key");
        println!("keyed pool pages: rw with protection key {key:?}; PROT_NONE pool: {perms}");
    });
}

// ---- 2. The key is closed while the caller's closure runs. ----

#[test]
fn slot_faults_inside_the_callers_closure() {
    const TEST: &str = "slot_faults_inside_the_callers_closure";
    if let Some(role) = child::role() {
        return slot_read_in_closure(&role);
    }
    if !protection_keys_or_skip(TEST) {
        return;
    }
    let keyed = Child::new(TEST, "key").run();
    assert_segv_after_marker(&keyed, "keyed slot read inside with_bytes");
    assert_segv_code(&keyed, SEGV_PKUERR, "keyed slot read inside with_bytes");

    // Control: PROT_NONE pages fault there too (the key adds no exposure).
    let plain = Child::new(TEST, "protnone").run();
    assert_segv_after_marker(&plain, "PROT_NONE slot read inside with_bytes");
    assert_segv_code(&plain, SEGV_ACCERR, "PROT_NONE slot read inside with_bytes");

    // Control: at the same point an ordinary heap byte reads fine.
    let heap = Child::new(TEST, "heap").run();
    heap.assert_done("heap read inside with_bytes");
    assert!(
        heap.stderr.contains("heap-read-survived"),
        "{}",
        heap.describe()
    );
}

fn slot_read_in_closure(role: &str) {
    no_core_file();
    let protection = match role {
        "protnone" => PoolProtection::ProtNone,
        _ => PoolProtection::ProtectionKey,
    };
    let known = known_bytes();
    let secret = pooled(protection).new(&mut known.clone()).expect("create");
    let heap = Box::new(known[0]);
    let slot = test_hooks::data_address(&secret);
    let target = if role == "heap" {
        &*heap as *const u8
    } else {
        slot as *const u8
    };
    report_segv_at(slot);
    secret
        .with_bytes(|bytes| {
            assert_eq!(bytes, known, "{role}: wrong bytes inside");
            assert!(!secret.is_readable_now().unwrap(), "{role}: slot readable");
            announce_fatal_access(&format!("{role}: reads {target:p} inside with_bytes"));
            // SAFETY: for "heap" an ordinary live byte; otherwise a
            // deliberately forbidden read of the slot, which must fault.
            let v = unsafe { std::ptr::read_volatile(target) };
            eprintln!("{role}: read {v:#x}; heap-read-survived");
        })
        .expect("with_bytes");
    child::done();
}

// ---- 3. Another thread is denied, at rest and during an access. ----

#[test]
fn other_thread_cannot_read_at_rest_or_during_an_access() {
    const TEST: &str = "other_thread_cannot_read_at_rest_or_during_an_access";
    if let Some(role) = child::role() {
        return other_thread_reads(role == "during");
    }
    if !protection_keys_or_skip(TEST) {
        return;
    }
    for role in ["at-rest", "during"] {
        let run = Child::new(TEST, role).run();
        let what = format!("second thread reads the keyed slot {role}");
        assert_segv_after_marker(&run, &what);
        assert_segv_code(&run, SEGV_PKUERR, &what);
    }
}

fn other_thread_reads(during: bool) {
    no_core_file();
    let known = known_bytes();
    let secret = pooled(PoolProtection::ProtectionKey)
        .new(&mut known.clone())
        .expect("create");
    let slot = test_hooks::data_address(&secret);
    report_segv_at(slot);
    let (start, end) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let (s, e) = (Arc::clone(&start), Arc::clone(&end));
    let reader = std::thread::spawn(move || {
        s.wait();
        announce_fatal_access(&format!("second thread reads {slot:#x}"));
        // SAFETY: deliberately forbidden read of the keyed slot: it must fault.
        let v = unsafe { std::ptr::read_volatile(slot as *const u8) };
        eprintln!("second thread read {v:#x} and survived");
        e.wait();
    });
    if during {
        secret
            .with_bytes(|bytes| {
                assert_eq!(bytes, known);
                start.wait();
                end.wait();
            })
            .expect("with_bytes");
    } else {
        start.wait();
        end.wait();
    }
    reader.join().expect("reader thread");
    child::done();
}

// ---- 4. The kernel copies from a slot only with the thread's key rights. ----

fn pipe() -> (File, OwnedFd) {
    let mut fds: [RawFd; 2] = [-1; 2];
    // SAFETY: `fds` is a valid out-array of two descriptors.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn write_from(fd: &OwnedFd, addr: usize, len: usize) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: write(2) only reads `[addr, addr + len)`; if that is not
    // readable by this thread the kernel returns EFAULT, which we test for.
    let n = unsafe { libc::write(fd.as_raw_fd(), addr as *const libc::c_void, len) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[test]
fn kernel_refuses_to_copy_from_a_keyed_slot() {
    const TEST: &str = "kernel_refuses_to_copy_from_a_keyed_slot";
    if !protection_keys_or_skip(TEST) {
        return;
    }
    child::in_child(TEST, || {
        let (mut rd, wr) = pipe();
        let known = known_bytes();
        let secret = pooled(PoolProtection::ProtectionKey)
            .new(&mut known.clone())
            .expect("create");
        let slot = test_hooks::data_address(&secret);
        let efault = |r: std::io::Result<usize>, when: &str| {
            assert_eq!(
                r.map_err(|e| e.raw_os_error()),
                Err(Some(libc::EFAULT)),
                "write(2) from the keyed slot {when}"
            );
        };
        efault(write_from(&wr, slot, 16), "at rest");
        secret
            .with_bytes(|_| efault(write_from(&wr, slot, 16), "inside with_bytes"))
            .expect("with_bytes");

        // Control: the same write from an ordinary buffer goes through, and
        // it is all the pipe holds.
        let ordinary = [0x5au8; 16];
        assert_eq!(write_from(&wr, ordinary.as_ptr() as usize, 16).unwrap(), 16);
        drop(wr);
        let mut got = Vec::new();
        rd.read_to_end(&mut got).expect("read the pipe");
        assert_eq!(got, ordinary, "the pipe holds something else");
        println!("write(2) from the keyed slot: EFAULT; from an ordinary buffer: 16 bytes");
    });
}

// ---- 5. Create, read and close in a free slot make no system call. ----
//
// Under a seccomp filter that lets through only read, write, exit and
// sigreturn (the set of `SECCOMP_MODE_STRICT`) and traps anything else.
// Strict mode itself does not fit: it also disables `RDTSC` for the task,
// so the vDSO `clock_gettime` behind `Instant::now` (the allocation-time
// metric; no system call) dies by SIGSEGV there.

/// Exit code of a forked child whose SIGSYS handler saw a forbidden system call.
const TRAPPED: i32 = 77;
/// The descriptor the forked child writes its notes to.
static NOTES_FD: AtomicUsize = AtomicUsize::new(usize::MAX);

fn note(s: &[u8]) {
    let fd = NOTES_FD.load(Ordering::Relaxed) as libc::c_int;
    // SAFETY: write(2) of a valid buffer; async-signal-safe, and allowed by
    // the filter.
    unsafe { libc::write(fd, s.as_ptr().cast(), s.len()) };
}

/// Leave this thread (the forked child's only one) with `code`: `exit`,
/// which the filter allows (`exit_group` it does not).
fn sys_exit(code: i32) -> ! {
    // SAFETY: ends the calling thread, the forked child's only one.
    unsafe { libc::syscall(libc::SYS_exit, code) };
    unreachable!("SYS_exit returned")
}

extern "C" fn report_syscall(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to a SA_SIGINFO handler;
    // for a seccomp SIGSYS its `_sigsys` member is the one filled in.
    let nr = unsafe { (*info).si_syscall() };
    let mut text = *b"syscall=000 ";
    for (i, d) in [100, 10, 1].into_iter().enumerate() {
        text[8 + i] = b'0' + (nr / d % 10) as u8;
    }
    note(&text);
    sys_exit(TRAPPED)
}

/// Clock sources the vDSO reads without entering the kernel.
const VDSO_CLOCKS: [&str; 4] = [
    "tsc",
    "kvm-clock",
    "hyperv_clocksource_tsc_page",
    "arch_sys_counter",
];

/// Whether `clock_gettime` (the allocation-time metric) is a real system
/// call here; if so, says so loudly, and the filter lets it through.
fn clock_is_a_system_call() -> bool {
    let path = "/sys/devices/system/clocksource/clocksource0/current_clocksource";
    let source = std::fs::read_to_string(path).unwrap_or_default();
    let vdso = VDSO_CLOCKS.contains(&source.trim());
    if !vdso {
        eprintln!(
            "NOTE: clocksource {:?} has no vDSO path: clock_gettime, read for the \
             allocation-time metric, is a system call here and the filter allows it",
            source.trim()
        );
    }
    !vdso
}

/// Trap every system call but read, write, exit and rt_sigreturn (and
/// clock_gettime where the clock has no vDSO path): a SIGSYS handler notes
/// its number and exits with [`TRAPPED`].
fn forbid_system_calls(allow_clock: bool) -> std::io::Result<()> {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let mut allowed = vec![
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_exit,
        libc::SYS_rt_sigreturn,
    ];
    if allow_clock {
        allowed.push(libc::SYS_clock_gettime);
    }
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let n = allowed.len() as u8;
    let mut prog = vec![
        // arch == x86_64, else trap (skip the syscall-number load and the tests).
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: n + 1,
            k: AUDIT_ARCH_X86_64,
        },
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
    ];
    for (i, nr) in allowed.into_iter().enumerate() {
        prog.push(libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: n - i as u8,
            jf: 0,
            k: nr as u32,
        });
    }
    prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_TRAP));
    prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: an all-zero sigaction is valid; we fill handler, flags and mask.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = report_syscall as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `sa` and `fprog` (with `prog`) are valid for the calls, which
    // only read them; the filter applies to this (forked) process alone.
    let ok = unsafe {
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) == 0
            && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            ) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// In a forked child: warm the pool up, forbid system calls, then create,
/// read and close a secret, noting each step.
fn create_read_close_without_syscalls(protection: PoolProtection) -> i32 {
    let factory = pooled(protection);
    // Warm up: the chunk of this size class (kept by `_keep`), the memory
    // file, this thread's scratch buffer, thread-locals, the allocator.
    let _keep = factory.new(&mut [7u8; 32]).expect("warm: keep the chunk");
    let warm = factory.new(&mut known_bytes()).expect("warm: create");
    assert!(warm.with_bytes(|b| b == known_bytes()).expect("warm: read"));
    warm.close().expect("warm: close");
    drop(warm);
    drop(Vec::<u8>::with_capacity(64 * 1024));
    let known = known_bytes();
    let mut buf = known;
    let allow_clock = clock_is_a_system_call();

    if let Err(e) = forbid_system_calls(allow_clock) {
        eprintln!("seccomp filter: {e}");
        return 90;
    }
    note(b"filter-on ");
    let Ok(secret) = factory.new(&mut buf) else {
        sys_exit(10)
    };
    note(b"created ");
    if buf != [0u8; 32] {
        sys_exit(11);
    }
    match secret.with_bytes(|b| b == known) {
        Ok(true) => note(b"read "),
        Ok(false) => sys_exit(12),
        Err(_) => sys_exit(13),
    }
    if secret.close().is_err() {
        sys_exit(14);
    }
    note(b"closed ");
    sys_exit(0)
}

#[test]
fn create_read_close_make_no_system_call() {
    const TEST: &str = "create_read_close_make_no_system_call";
    if !protection_keys_or_skip(TEST) {
        return;
    }
    child::in_child(TEST, || {
        let run = |protection| {
            use std::os::fd::AsRawFd;
            let (mut rd, wr) = pipe();
            NOTES_FD.store(wr.as_raw_fd() as usize, Ordering::Relaxed);
            let status = fork_and_wait(|| create_read_close_without_syscalls(protection));
            drop(wr);
            let mut notes = String::new();
            rd.read_to_string(&mut notes).expect("read the notes");
            (child::describe(status), notes)
        };
        let (status, notes) = run(PoolProtection::ProtectionKey);
        assert_eq!(
            (status.as_str(), notes.as_str()),
            ("exit code 0", "filter-on created read closed "),
            "keyed pool: create/read/close under a filter that traps system calls \
             (exit code {TRAPPED} with syscall=N: the library made system call N)"
        );

        // Control: the PROT_NONE pool writes the slot with pwrite, which the
        // filter traps at the create.
        let (status, notes) = run(PoolProtection::ProtNone);
        let trapped = format!("exit code {TRAPPED}");
        let pwrite = format!("filter-on syscall={:03} ", libc::SYS_pwrite64);
        assert_eq!(
            (status.as_str(), notes.as_str()),
            (trapped.as_str(), pwrite.as_str()),
            "PROT_NONE pool: its create should be trapped at pwrite64"
        );
        println!("keyed pool: create/read/close with system calls trapped; PROT_NONE pool: trapped at pwrite64");
    });
}
