//! Attack (window entrants join, issue 12 item 3): six threads storm
//! window accesses (one in seven nested) on anonymous, guarded and memfd
//! window secrets, with a close racing them every other round; once every
//! thread is done the pages must be unreadable. Holds.
#![cfg(target_os = "linux")]
use securememory::{AccessPath, Backend, Layout, Options, ProtectedFactory, SecretFactory};
use std::sync::atomic::{AtomicBool, Ordering};

#[test]
fn no_window_left_open_after_concurrent_accesses_and_closes() {
    for (name, opts) in [
        (
            "anon-window",
            Options::default()
                .backend(Backend::Anonymous)
                .access(AccessPath::Window),
        ),
        (
            "anon-guarded",
            Options::default()
                .backend(Backend::Anonymous)
                .access(AccessPath::Window)
                .layout(Layout::Guarded),
        ),
        (
            "memfd-window",
            Options::default()
                .backend(Backend::Memfd)
                .access(AccessPath::Window),
        ),
    ] {
        let f = ProtectedFactory::new(opts).unwrap();
        for round in 0..30 {
            let s = f.new(&mut [9u8; 64]).unwrap();
            let stop = AtomicBool::new(false);
            std::thread::scope(|sc| {
                for t in 0..6 {
                    let s = &s;
                    let stop = &stop;
                    sc.spawn(move || {
                        let mut i = 0u32;
                        while !stop.load(Ordering::Relaxed) || i < 200 {
                            let r = s.with_bytes(|b| {
                                if (i + t) % 7 == 0 {
                                    let _ = s.with_bytes(|c| c[0]);
                                }
                                b[0]
                            });
                            match r {
                                Ok(9) => {}
                                Err(securememory::Error::Closed) => return,
                                e => panic!("{e:?}"),
                            }
                            i += 1;
                        }
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
                stop.store(true, Ordering::Relaxed);
                if round % 2 == 1 {
                    s.close().unwrap();
                }
            });
            assert!(
                !s.is_readable_now().unwrap(),
                "{name} round {round}: readable with no access in flight"
            );
        }
    }
}
