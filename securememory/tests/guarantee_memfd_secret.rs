//! Guarantee: a `Backend::MemfdSecret` secret is hidden from the kernel.
//! Its pages are removed from the kernel's direct map, so reading them
//! through `/proc/self/mem` (the way a debugger or a root process with
//! ptrace access reads another process) fails, in every layout.
//!
//! The same read of an anonymous-backed secret returns its bytes, which
//! shows the test tells the two apart. So does the read of a memfd-backed
//! secret: `PROT_NONE` keeps the process itself from touching the page, but
//! memfd pages stay in the direct map, readable through `/proc/<pid>/mem` by
//! the process itself, by root and by anything allowed to ptrace it. That is
//! in the README's threat table: only memfd_secret protects against it.

mod common;

use common::configs::{self, memfd_secret_or_skip, Config};
use common::procfs::{mapping_at, read_proc_mem};
use securememory::test_hooks::data_address;
use securememory::{Backend, ProtectedFactory, Secret, SecretFactory};

const SECRET: &[u8; 32] = b"memfd_secret guarantee: 5bd0e2a9";

fn create(cfg: &Config) -> Secret {
    let factory = ProtectedFactory::new(cfg.options())
        .unwrap_or_else(|e| panic!("{}: factory: {e}", cfg.name));
    let secret = factory.new(&mut SECRET.clone()).unwrap();
    assert_eq!(secret.with_bytes(|b| b.to_vec()).unwrap(), SECRET);
    assert!(
        !secret.is_readable_now().unwrap(),
        "{}: readable at rest",
        cfg.name
    );
    secret
}

#[test]
fn proc_self_mem_cannot_read_memfd_secret_pages() {
    if !memfd_secret_or_skip("proc_self_mem_cannot_read_memfd_secret_pages") {
        return;
    }
    for cfg in &configs::select(|c| c.on_default_path() && c.backend() == Backend::MemfdSecret) {
        let secret = create(cfg);
        let addr = data_address(&secret);
        // The pages are mapped: the failure below is not "nothing there".
        let line = mapping_at(addr).expect("mapped").line;
        assert!(
            line.contains("secretmem"),
            "{}: not a memfd_secret mapping: {line}",
            cfg.name
        );
        match read_proc_mem(addr, SECRET.len()) {
            Err(e) => {
                assert_eq!(
                    e.raw_os_error(),
                    Some(libc::EIO),
                    "{}: unexpected error {e}",
                    cfg.name
                );
                println!("{}: pread through /proc/self/mem fails: {e}", cfg.name);
            }
            Ok(bytes) => {
                assert_ne!(bytes, SECRET, "{}: the kernel read the secret", cfg.name);
                panic!(
                    "{}: pread through /proc/self/mem returned {} bytes",
                    cfg.name,
                    bytes.len()
                );
            }
        }
        // Still the secret, still usable.
        assert_eq!(secret.with_bytes(|b| b.to_vec()).unwrap(), SECRET);
        secret.close().unwrap();
    }
}

#[test]
fn proc_self_mem_reads_anonymous_and_memfd_pages() {
    // The control: the same read succeeds where the direct map has the pages.
    for cfg in &configs::select(|c| c.on_default_path() && c.backend() != Backend::MemfdSecret) {
        let secret = create(cfg);
        let addr = data_address(&secret);
        let bytes = read_proc_mem(addr, SECRET.len())
            .unwrap_or_else(|e| panic!("{}: pread through /proc/self/mem failed: {e}", cfg.name));
        assert_eq!(
            bytes, SECRET,
            "{}: /proc/self/mem did not return the secret",
            cfg.name
        );
        println!(
            "{}: pread through /proc/self/mem returns the secret (not hidden from the kernel)",
            cfg.name
        );
        secret.close().unwrap();
    }
}
