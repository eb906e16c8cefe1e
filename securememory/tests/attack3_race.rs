//! Attack: many threads access one secret, nesting accesses of it, panicking
//! inside some, reading it through `reader()`, while two threads close it;
//! on the copy path, the window path, a secret larger than the scratch (copy
//! falls back to the window), the pool and the keyed pool. Checks, with the
//! SeqCst flag pair of `concurrency.rs`: no closure runs after `close`
//! returned, every access begun after it fails with `Closed`, every
//! successful access saw the right bytes; and afterwards nothing is
//! readable, `stats()` and `VmLck` are back to where they started. A
//! watchdog aborts the process on a hang.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use common::library_error;
use common::procfs::vm_lck_kib;
use securememory::{
    stats, AccessPath, Backend, Error, Layout, Options, PoolProtection, ProtectedFactory, Secret,
    SecretFactory,
};

const THREADS: usize = 6;

#[derive(Default)]
struct Obs {
    inside: AtomicUsize,
    closed_returned: AtomicBool,
    ok: AtomicUsize,
    bad: Mutex<Vec<String>>,
}

impl Obs {
    fn bad(&self, s: String) {
        let mut v = self.bad.lock().unwrap();
        if v.len() < 10 {
            v.push(s);
        }
    }
    fn inside(&self, b: &[u8], want: &[u8]) {
        self.inside.fetch_add(1, SeqCst);
        if self.closed_returned.load(SeqCst) {
            self.bad("a closure ran after close returned".into());
        }
        if b != want {
            self.bad("wrong bytes".into());
        }
        self.inside.fetch_sub(1, SeqCst);
    }
}

fn closed_or_bad(obs: &Obs, began_after: bool, what: &str, r: Result<(), Error>) -> bool {
    match r {
        Ok(()) if began_after => {
            obs.bad(format!("{what}: began after close returned, succeeded"));
            true
        }
        Ok(()) => {
            obs.ok.fetch_add(1, SeqCst);
            false
        }
        Err(Error::Closed) => true,
        Err(e) => {
            obs.bad(format!("{what}: {e:?}"));
            true
        }
    }
}

/// One access of kind `op` (0 plain, 1 nested same secret, 2 panic inside,
/// 3 reader); `true` once the secret reported `Closed`.
fn one(s: &Secret, obs: &Obs, want: &[u8], op: usize, buf: &mut [u8]) -> bool {
    let after = obs.closed_returned.load(SeqCst);
    match op {
        0 => closed_or_bad(obs, after, "plain", s.with_bytes(|b| obs.inside(b, want))),
        1 => {
            let r = s.with_bytes(|b| {
                obs.inside(b, want);
                s.with_bytes(|c| obs.inside(c, want))
            });
            closed_or_bad(obs, after, "nested", r.and_then(|x| x))
        }
        2 => {
            let r = catch_unwind(AssertUnwindSafe(|| {
                s.with_bytes(|b| {
                    obs.inside(b, want);
                    panic!("closure panics (expected)");
                })
            }));
            match r {
                Err(_) => {
                    obs.ok.fetch_add(1, SeqCst);
                    false
                }
                Ok(r) => closed_or_bad(obs, after, "panicking", r),
            }
        }
        _ => {
            let r = match s.reader().read_exact(buf) {
                Ok(()) => {
                    if buf != want {
                        obs.bad("reader: wrong bytes".into());
                    }
                    Ok(())
                }
                Err(e) => match library_error(&e) {
                    Some(Error::Closed) => Err(Error::Closed),
                    _ => Err(Error::Unsupported(format!("reader: {e}"))),
                },
            };
            closed_or_bad(obs, after, "reader", r)
        }
    }
}

fn race(name: &str, opts: Options, len: usize) {
    let f = ProtectedFactory::new(opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    let want: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8 | 1).collect();
    for _round in 0..4 {
        // Threads joined (not scoped): `join` also waits for each thread's
        // locals, its scratch buffer among them, to be released.
        let s = Arc::new(f.new(&mut want.clone()).unwrap());
        let obs = Arc::new(Obs::default());
        let start = Arc::new(Barrier::new(THREADS + 2));
        let want = Arc::new(want.clone());
        let mut handles = Vec::new();
        for id in 0..THREADS {
            let (s, obs, want, start) = (s.clone(), obs.clone(), want.clone(), start.clone());
            handles.push(thread::spawn(move || {
                let mut buf = vec![0u8; want.len()];
                start.wait();
                let mut i = id;
                while !one(&s, &obs, &want, i % 4, &mut buf) {
                    i += 1;
                }
                // Closed is sticky.
                for op in 0..4 {
                    one(&s, &obs, &want, op, &mut buf);
                }
            }));
        }
        for _ in 0..2 {
            let (s, obs, start) = (s.clone(), obs.clone(), start.clone());
            handles.push(thread::spawn(move || {
                start.wait();
                thread::sleep(Duration::from_millis(15));
                let r = s.close();
                obs.closed_returned.store(true, SeqCst);
                let n = obs.inside.load(SeqCst);
                if n != 0 {
                    obs.bad(format!("{n} closures inside when close returned"));
                }
                if let Err(e) = r {
                    obs.bad(format!("close: {e:?}"));
                }
            }));
        }
        for h in handles {
            h.join().expect("a racing thread");
        }
        let bad = obs.bad.lock().unwrap().clone();
        assert!(bad.is_empty(), "{name}: {bad:#?}");
        assert!(obs.ok.load(SeqCst) > 0, "{name}: nothing succeeded");
        assert!(
            !s.is_readable_now().unwrap(),
            "{name}: readable after close"
        );
    }
    eprintln!("{name}: held");
}

#[test]
fn accesses_of_every_kind_racing_two_closers() {
    // A hang aborts the process (the test then fails) instead of stalling CI.
    thread::spawn(|| {
        thread::sleep(Duration::from_secs(240));
        eprintln!("attack3_race: hang");
        std::process::abort();
    });
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(|i| {
        if !i.to_string().contains("(expected)") {
            eprintln!("{i}");
        }
    }));
    let memfd = Options::default().backend(Backend::Memfd);
    let mut cases = vec![
        ("memfd/copy", memfd.access(AccessPath::Copy), 32),
        (
            "memfd/copy/16KiB (window)",
            memfd.access(AccessPath::Copy),
            16 * 1024,
        ),
        (
            "memfd/guarded/copy",
            memfd.access(AccessPath::Copy).layout(Layout::Guarded),
            100,
        ),
        ("memfd/window", memfd.access(AccessPath::Window), 32),
        (
            "anonymous/window/16KiB",
            Options::default()
                .backend(Backend::Anonymous)
                .access(AccessPath::Window),
            16 * 1024,
        ),
        ("pooled", memfd.layout(Layout::Pooled), 48),
    ];
    if securememory::protection_keys_status().is_ok() {
        cases.push((
            "pooled/pkey",
            memfd
                .layout(Layout::Pooled)
                .pool_protection(PoolProtection::ProtectionKey),
            48,
        ));
    } else {
        eprintln!("SKIPPED: pooled/pkey: no protection keys");
    }
    // Warm this thread's scratch and the pools (kept for the process's life).
    for (_, o, len) in &cases {
        let f = ProtectedFactory::new(*o).unwrap();
        f.new(&mut vec![1u8; *len])
            .unwrap()
            .with_bytes(|_| ())
            .unwrap();
    }
    let (base, lck) = (stats(), vm_lck_kib());
    for (name, o, len) in cases {
        race(name, o, len);
    }
    let now = stats();
    assert_eq!(now.in_use, base.in_use, "secrets left open");
    assert_eq!(
        now.pool_slots_used, base.pool_slots_used,
        "slots left taken"
    );
    // The scoped threads' scratch buffers went with them.
    assert_eq!(now.bytes_locked, base.bytes_locked, "locked bytes");
    assert_eq!(vm_lck_kib(), lck, "VmLck");
}
