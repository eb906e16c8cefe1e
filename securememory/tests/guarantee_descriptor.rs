//! Guarantee: the memory-file descriptor the copy path keeps
//! (`test_hooks::store_fd()`) is not a way in.
//! - It is close-on-exec: `FD_CLOEXEC` is set and a spawned program does not
//!   have it (control: a non-close-on-exec duplicate does show up).
//! - In a fork child it is closed before the child runs its own code, and
//!   accessing a secret there fails with `Error::Forked`.
//! - It cannot be reopened through `/proc/self/fd/N` (the file's mode is
//!   0000) by a process without `CAP_DAC_OVERRIDE` / `CAP_DAC_READ_SEARCH`;
//!   control: with them (root), the same open succeeds, so the mode is what
//!   blocks it.

mod common;
mod support_proc;

use std::ffi::CString;
use std::io;
use std::process::Command;
use std::sync::Mutex;

use caps::{CapSet, Capability};
use common::child::{self, Child};
use common::procfs::status_field;
use securememory::test_hooks::store_fd;
use securememory::{Error, ProtectedFactory, Secret, SecretFactory};
use support_proc::fork_and_wait;

/// Serialises spawning in this binary while the control's non-close-on-exec
/// duplicate exists, so no other child inherits it.
static SPAWN: Mutex<()> = Mutex::new(());

const MEMFD_NAME: &str = "memfd:securememory";

/// A default secret and the store's descriptor.
fn secret_and_fd() -> (Secret, i32) {
    let secret = ProtectedFactory::default()
        .new(&mut b"descriptor guarantee".to_vec())
        .unwrap();
    let fd = store_fd().expect("the memfd store is open after creating a default secret");
    assert!(
        link(fd).is_some_and(|l| l.contains(MEMFD_NAME)),
        "fd {fd} is {:?}",
        link(fd)
    );
    (secret, fd)
}

/// What `/proc/self/fd/N` names, if `fd` is open.
fn link(fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The descriptors a freshly spawned `ls` holds, as `ls -l` lists them.
fn spawned_fds() -> String {
    let out = Command::new("ls")
        .args(["-l", "/proc/self/fd"])
        .output()
        .expect("run ls");
    assert!(out.status.success(), "ls failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn store_fd_is_close_on_exec() {
    let (secret, fd) = secret_and_fd();
    // SAFETY: F_GETFD reads the descriptor flags; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert!(flags >= 0, "fcntl: {}", io::Error::last_os_error());
    assert_ne!(
        flags & libc::FD_CLOEXEC,
        0,
        "the memfd store descriptor is not close-on-exec"
    );

    let _spawning = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
    let listing = spawned_fds();
    assert!(
        !listing.contains(MEMFD_NAME),
        "a spawned program inherited the memfd:\n{listing}"
    );

    // Control: a duplicate without close-on-exec is seen by the same listing.
    // SAFETY: F_DUPFD makes a new descriptor (>= 100) for the same file.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD, 100) };
    assert!(dup >= 0, "F_DUPFD: {}", io::Error::last_os_error());
    let control = spawned_fds();
    // SAFETY: `dup` is the descriptor just made, owned by this test.
    unsafe { libc::close(dup) };
    assert!(
        control.contains(MEMFD_NAME),
        "control: the listing did not show an inherited memfd:\n{control}"
    );
    println!("store fd {fd} is FD_CLOEXEC and absent from a spawned program (a non-CLOEXEC dup is present)");
    secret.close().unwrap();
}

#[test]
fn store_fd_is_closed_in_fork_child() {
    const TEST: &str = "store_fd_is_closed_in_fork_child";
    if child::role().is_some() {
        let (secret, fd) = secret_and_fd();
        let status = fork_and_wait(|| {
            // First thing in the child: the at-fork handler already ran.
            // SAFETY: F_GETFD reads the descriptor flags; no memory is passed.
            let rc = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            let errno = io::Error::last_os_error().raw_os_error();
            if rc >= 0 && link(fd).is_some_and(|l| l.contains(MEMFD_NAME)) {
                eprintln!("fork child: fd {fd} is still the memfd");
                return 1;
            }
            if rc < 0 && errno != Some(libc::EBADF) {
                eprintln!("fork child: fcntl failed with {errno:?}, not EBADF");
                return 2;
            }
            if store_fd().is_some() {
                eprintln!("fork child: store_fd() still reports a descriptor");
                return 3;
            }
            match secret.with_bytes(|b| b.to_vec()) {
                Err(Error::Forked) => 0,
                other => {
                    eprintln!("fork child: with_bytes gave {other:?}");
                    4
                }
            }
        });
        assert_eq!(
            status.code(),
            Some(0),
            "fork child: {}",
            child::describe(status)
        );
        // The parent's descriptor and secret are untouched.
        assert_eq!(store_fd(), Some(fd));
        assert_eq!(
            secret.with_bytes(|b| b.to_vec()).unwrap(),
            b"descriptor guarantee"
        );
        println!(
            "store fd {fd} is closed in a fork child (EBADF) and access there is Error::Forked"
        );
        child::done();
        return;
    }
    let _spawning = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
    let run = Child::new(TEST, "fork").run();
    run.assert_done(TEST);
    print!("{}", run.stdout);
}

/// `open(path, flags)`: the new descriptor (closed again) or the error.
fn try_open(path: &str, flags: i32) -> io::Result<()> {
    let c = CString::new(path).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened by this function.
    unsafe { libc::close(fd) };
    Ok(())
}

#[test]
fn store_fd_cannot_be_reopened_through_proc() {
    const TEST: &str = "store_fd_cannot_be_reopened_through_proc";
    if child::role().is_some() {
        let (secret, fd) = secret_and_fd();
        // SAFETY: an all-zero `stat` is a valid out-buffer for fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid out-pointer.
        assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
        assert_eq!(
            st.st_mode & 0o7777,
            0,
            "memfd mode is {:o}, not 0000",
            st.st_mode & 0o7777
        );

        let paths = [
            format!("/proc/self/fd/{fd}"),
            format!("/proc/{}/fd/{fd}", std::process::id()),
        ];
        // Control: with CAP_DAC_OVERRIDE (root) the mode does not stop the open.
        let dac = [
            Capability::CAP_DAC_OVERRIDE,
            Capability::CAP_DAC_READ_SEARCH,
            Capability::CAP_FOWNER,
        ];
        if caps::has_cap(None, CapSet::Effective, Capability::CAP_DAC_OVERRIDE).unwrap() {
            try_open(&paths[0], libc::O_RDONLY)
                .expect("control: root reopens the memfd through /proc/self/fd");
        } else {
            eprintln!("SKIPPED: control open with CAP_DAC_OVERRIDE: this process does not have it");
        }

        // Drop the DAC-bypassing capabilities from this thread's effective set
        // (capabilities are per thread; the open below is made by this thread).
        for cap in dac {
            caps::drop(None, CapSet::Effective, cap).unwrap();
        }
        let eff =
            u64::from_str_radix(&status_field("/proc/thread-self/status", "CapEff"), 16).unwrap();
        for cap in dac {
            assert_eq!(eff & (1 << cap.index()), 0, "{cap} still effective");
        }
        for path in &paths {
            for (flags, what) in [(libc::O_RDONLY, "O_RDONLY"), (libc::O_RDWR, "O_RDWR")] {
                match try_open(path, flags) {
                    Err(e) if e.raw_os_error() == Some(libc::EACCES) => {}
                    other => panic!(
                        "open({path}, {what}) without DAC capabilities: {other:?}, expected EACCES"
                    ),
                }
            }
        }
        // The library's own descriptor still works.
        assert_eq!(
            secret.with_bytes(|b| b.to_vec()).unwrap(),
            b"descriptor guarantee"
        );
        println!("reopening {} fails with EACCES without CAP_DAC_OVERRIDE/READ_SEARCH; succeeds with them", paths[0]);
        child::done();
        return;
    }
    let _spawning = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
    let run = Child::new(TEST, "reopen").run();
    run.assert_done(TEST);
    print!("{}", run.stdout);
}
