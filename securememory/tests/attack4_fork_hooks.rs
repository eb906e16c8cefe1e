//! Attack on the fork child hooks (`mem/fork.rs` `on_child`): a hook
//! registered twice runs once per child; with the array full, one more is
//! refused loudly and every registered one still runs, the library's own
//! (the budget starts at zero, the memory file's descriptor is closed) in
//! a child of `fork()` and in a raw fork child at its first library call.
// Linux only: uses Linux interfaces (procfs, fork, capabilities, rlimits).
#![cfg(target_os = "linux")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::child::in_child;
use securememory::SecretFactory;
use securememory::{stats, test_hooks, AccessPath, Backend, Layout, Options, ProtectedFactory};

static A: AtomicUsize = AtomicUsize::new(0);
static B: AtomicUsize = AtomicUsize::new(0);

fn count_a(_: u64) {
    A.fetch_add(1, Ordering::Relaxed);
}
fn count_b(_: u64) {
    B.fetch_add(1, Ordering::Relaxed);
}
fn never(_: u64) {}

/// What a fork child reports (its exit code): 0 if each hook ran exactly
/// once, nothing is counted as locked and the parent's memory file
/// descriptor is closed.
fn check_child(fd: i32, first_call: impl FnOnce()) -> i32 {
    first_call();
    let once = A.load(Ordering::Relaxed) == 1 && B.load(Ordering::Relaxed) == 1;
    let budget = stats().bytes_locked == 0;
    // SAFETY: F_GETFD only reads the descriptor's flags.
    let closed = unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1;
    eprintln!("child: hooks once {once}, budget zero {budget}, memory file closed {closed}");
    i32::from(!(once && budget && closed))
}

#[test]
fn child_hooks_registered_twice_and_full() {
    in_child("child_hooks_registered_twice_and_full", || {
        let f = ProtectedFactory::new(
            Options::default()
                .backend(Backend::Memfd)
                .layout(Layout::Page)
                .access(AccessPath::Copy),
        )
        .unwrap();
        // The library's two hooks (budget, memory file) are in.
        let s = f.new(&mut [1u8; 32]).unwrap();
        let fd = test_hooks::store_fd().expect("the memory file is open");
        test_hooks::on_fork_child(count_a);
        test_hooks::on_fork_child(count_a);
        test_hooks::on_fork_child(count_b);
        // Full now (four slots); registering one already in is still fine.
        test_hooks::on_fork_child(count_b);
        let refused = std::panic::catch_unwind(|| test_hooks::on_fork_child(never));
        assert!(refused.is_err(), "a fifth distinct hook must be refused");

        // SAFETY: fork; the child checks and `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            common::run_and_exit(|| check_child(fd, || ()));
        }
        assert_eq!(common::wait_status(pid), 0, "fork() child");

        // SAFETY: a raw fork; the child checks after its first library call.
        let raw = unsafe { libc::syscall(libc::SYS_fork) } as libc::pid_t;
        if raw == 0 {
            common::run_and_exit(|| {
                check_child(fd, || {
                    let _ = stats();
                })
            });
        }
        assert_eq!(common::wait_status(raw), 0, "raw fork child");
        assert_eq!(A.load(Ordering::Relaxed), 0, "no hook runs in the parent");
        assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), [1u8; 32]);
    });
}
