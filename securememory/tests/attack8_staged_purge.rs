//! A reader that calls `purge()` in the middle of a staged fill into a
//! ready page (its bytes in the thread's scratch, written through the file
//! after the reader returns). The README: a secret whose creation is under
//! way when the purge starts is purged too, its accesses fail. The write
//! that lands after the purge must not make it readable again, and its
//! close must wipe the page (the next secret in it reads its own bytes).
// Linux only: memory-file ready pages.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;

use std::io::{self, Read};

use securememory::{stats, Error, Layout, Options, ProtectedFactory, SecretFactory};

/// Hands out 0x6e bytes; purges once, after the first half.
struct Purging {
    at: usize,
    len: usize,
    purged: bool,
}

impl Read for Purging {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.len / 2 && !self.purged {
            self.purged = true;
            securememory::purge();
        }
        let end = if self.at < self.len / 2 {
            self.len / 2
        } else {
            self.len
        };
        let n = buf.len().min(end - self.at);
        buf[..n].fill(0x6e);
        self.at += n;
        Ok(n)
    }
}

child_test! {
    fn a_purge_from_the_reader_purges_the_staged_secret() {
        for (name, opts) in [
            ("memfd page", Options::default()),
            ("memfd guarded", Options::default().layout(Layout::Guarded)),
        ] {
            let f = ProtectedFactory::new(opts).unwrap();
            f.new(&mut [1u8; 32]).unwrap().close().unwrap();
            let ready = stats().ready_pages;
            assert!(ready >= 1, "{name}: no ready page");
            let mut r = Purging { at: 0, len: 48, purged: false };
            let made = f.from_reader(&mut r, 48);
            assert!(r.purged, "{name}: the reader did not purge");
            match made {
                Err(_) => {}
                Ok(s) => {
                    assert_eq!(stats().ready_pages, ready - 1, "{name}: no ready page taken");
                    let got = s.with_bytes(|b| b.to_vec());
                    assert!(
                        matches!(got, Err(Error::Purged)),
                        "{name}: a secret made across a purge reads {got:?}"
                    );
                    let _ = s.close();
                }
            }
            // The page comes back wiped, or not at all.
            let s = f.from_reader(&mut &[0x11u8; 16][..], 16).unwrap();
            assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), vec![0x11; 16], "{name}");
            s.close().unwrap();
        }
    }
}
