//! Attack: `close` documents "a second call returns `Ok(())` once the first
//! has finished". A concurrent second closer that returned must therefore
//! see the secret counted as closed in `stats()` (`in_use`), as the first
//! closer does.
#![cfg(target_os = "linux")]

use std::sync::{Arc, Barrier};
use std::thread;

use securememory::{stats, ProtectedFactory, SecretFactory};

#[test]
fn a_second_closer_sees_the_secret_uncounted() {
    let f = ProtectedFactory::default();
    let base = stats().in_use;
    let mut stale = 0;
    for _ in 0..3000 {
        let s = Arc::new(f.new(&mut [3u8; 32]).unwrap());
        let go = Arc::new(Barrier::new(2));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (s, go) = (s.clone(), go.clone());
                thread::spawn(move || {
                    go.wait();
                    s.close().unwrap();
                    stats().in_use
                })
            })
            .collect();
        for h in hs {
            if h.join().unwrap() > base {
                stale += 1;
            }
        }
    }
    assert_eq!(
        stale, 0,
        "closers that returned while the secret was still counted in use"
    );
}
