//! Attacks on "one byte past the end of a guarded secret's slice dies by
//! SIGSEGV on the copy path too": placements the scratch tests do not try
//! (a secret exactly the scratch capacity, the 32nd of 32 nested guarded
//! accesses, a read in a thread-local destructor after the scratch is gone,
//! a fork child nested inside an access inherited from its parent, the
//! window path one byte over the capacity).
#![cfg(target_os = "linux")]

mod common;
mod support_child;

use std::cell::RefCell;

use common::child::{role, Child};
use common::configs::guarded_copy as guarded;
use securememory::{scratch_capacity, AccessPath, Secret, SecretFactory};
use support_child::{announce_fatal_access, assert_segv_after_marker, no_core_file};

const TEST: &str = "attack_guarded_read_past_the_end_dies_everywhere";

fn filled(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8) | 1).collect()
}

fn read_one_past(what: &str, bytes: &[u8]) {
    let last = bytes.as_ptr() as usize + bytes.len() - 1;
    // SAFETY: the slice's last byte.
    let b = unsafe { std::ptr::read_volatile(last as *const u8) };
    assert_eq!(b, bytes[bytes.len() - 1]);
    announce_fatal_access(&format!("{what}: one byte past the end"));
    // SAFETY: deliberately invalid: must hit a guard page and kill us.
    let b = unsafe { std::ptr::read_volatile((last + 1) as *const u8) };
    eprintln!("{what}: read {b:#x} past the end and lived");
}

struct PastEndOnExit(&'static Secret);

impl Drop for PastEndOnExit {
    fn drop(&mut self) {
        self.0.with_bytes(|b| read_one_past("tls-dtor", b)).unwrap();
    }
}

thread_local! {
    static ON_EXIT: RefCell<Option<PastEndOnExit>> = const { RefCell::new(None) };
}

fn nest(s: &[Secret], last: &dyn Fn()) {
    match s.split_first() {
        None => last(),
        Some((f, rest)) => f.with_bytes(|_| nest(rest, last)).unwrap(),
    }
}

fn case(name: &str) {
    no_core_file();
    let g = guarded();
    match name {
        "capacity" => {
            let s = g.new(&mut filled(scratch_capacity())).unwrap();
            assert_eq!(s.access_path(), AccessPath::Copy);
            s.with_bytes(|b| read_one_past(name, b)).unwrap();
        }
        "over-capacity-window" => {
            let s = g.new(&mut filled(scratch_capacity() + 1)).unwrap();
            s.with_bytes(|b| read_one_past(name, b)).unwrap();
        }
        "deep-32" => {
            let outer: Vec<Secret> = (0..31).map(|_| g.new(&mut filled(100)).unwrap()).collect();
            let s = g.new(&mut filled(33)).unwrap();
            nest(&outer, &|| {
                s.with_bytes(|b| read_one_past(name, b)).unwrap()
            });
        }
        "tls-dtor" => {
            let s: &'static Secret = Box::leak(Box::new(g.new(&mut filled(40)).unwrap()));
            std::thread::spawn(move || {
                ON_EXIT.with(|o| *o.borrow_mut() = Some(PastEndOnExit(s)));
                s.with_bytes(|_| ()).unwrap();
            })
            .join()
            .unwrap();
        }
        "fork-child-nested" => {
            let outer = g.new(&mut filled(64)).unwrap();
            outer
                .with_bytes(|_| {
                    // SAFETY: the child only uses the library and exits.
                    let pid = unsafe { libc::fork() };
                    if pid == 0 {
                        let mine = g.new(&mut filled(48)).unwrap();
                        mine.with_bytes(|b| read_one_past(name, b)).unwrap();
                        // SAFETY: leave the child without running the harness.
                        unsafe { libc::_exit(0) };
                    }
                    let mut status = 0;
                    // SAFETY: waits for our own child.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    // Pass the child's death on as ours.
                    if libc::WIFSIGNALED(status) {
                        // SAFETY: re-raises the same signal in this process,
                        // with its default action (std handles SIGSEGV).
                        unsafe {
                            libc::signal(libc::WTERMSIG(status), libc::SIG_DFL);
                            libc::raise(libc::WTERMSIG(status));
                        }
                    }
                    eprintln!("fork child exited with {status:#x}");
                })
                .unwrap();
        }
        other => panic!("no case {other}"),
    }
}

#[test]
fn attack_guarded_read_past_the_end_dies_everywhere() {
    if let Some(name) = role() {
        return case(&name);
    }
    for name in [
        "capacity",
        "over-capacity-window",
        "deep-32",
        "tls-dtor",
        "fork-child-nested",
    ] {
        let run = Child::new(TEST, name).run();
        assert_segv_after_marker(&run, name);
        println!("{name}: SIGSEGV one byte past the end");
    }
}
