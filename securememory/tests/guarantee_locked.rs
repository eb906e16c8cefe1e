//! Guarantee: a secret is never swapped (and never dumped, never copied into
//! a fork child), as the kernel reports it in `/proc/self/smaps`.
//!
//! For every configuration, every mapping (VMA) that holds the secret's data
//! pages (for a pooled secret: the chunk holding its slot) must show
//! - `Rss` non-zero and `Locked` equal to `Rss`: every resident page is
//!   locked (`Locked` counts the proportional set size of locked pages; the
//!   pages are mapped once, so it equals `Rss` exactly);
//! - `VmFlags` with `lo` (VM_LOCKED), `dd` (VM_DONTDUMP), and the fork
//!   advice: `wf` (VM_WIPEONFORK) on private anonymous memory, `dc`
//!   (VM_DONTCOPY, from MADV_DONTFORK) on the shared memfd and memfd_secret
//!   mappings.
//!
//! memfd_secret: the library never calls mlock on these pages (the kernel
//! refuses a second lock and charges RLIMIT_MEMLOCK itself). What smaps
//! shows on Linux 6.x is the kernel's own guarantee: `secretmem_mmap` sets
//! `VM_LOCKED | VM_DONTDUMP` on the mapping and the file's pages are
//! unevictable, so the VMA reads `lo` and `dd`, and `Locked` equals `Rss`
//! once the pages are faulted in (they are: the secret was written into
//! them). `dc` comes from the library's MADV_DONTFORK.
//!
//! The copy path's per-thread scratch buffer holds secrets too: it must be
//! locked, do-not-dump and wipe-on-fork likewise.

mod common;
mod support_child;

use common::configs;
use common::procfs::{smaps, Vma};
use securememory::{test_hooks, AccessPath, Backend, SecretFactory};
use support_child::known_bytes;

/// The mappings overlapping `[start, start + len)`; they must cover it.
fn vmas_of(start: usize, len: usize) -> Vec<Vma> {
    let end = start + len;
    let vmas: Vec<Vma> = smaps()
        .into_iter()
        .filter(|v| v.start < end && start < v.end)
        .collect();
    let mut at = start;
    for v in &vmas {
        assert!(
            v.start <= at,
            "gap in the mappings of {start:#x}..{end:#x}: {vmas:#?}"
        );
        at = at.max(v.end);
    }
    assert!(
        at >= end,
        "{start:#x}..{end:#x} is not fully mapped: {vmas:#?}"
    );
    vmas
}

fn assert_locked(what: &str, start: usize, len: usize, fork_flag: &str) {
    for v in vmas_of(start, len) {
        assert!(v.rss_kb > 0, "{what}: no resident pages: {v:#?}");
        assert_eq!(
            v.locked_kb, v.rss_kb,
            "{what}: resident but not locked: {v:#?}"
        );
        for flag in ["lo", "dd", fork_flag] {
            assert!(
                v.flags.iter().any(|f| f == flag),
                "{what}: VmFlags lacks {flag}: {v:#?}"
            );
        }
        println!(
            "{what}: {} Rss {} kB Locked {} kB [{}]",
            v.header,
            v.rss_kb,
            v.locked_kb,
            v.flags.join(" ")
        );
    }
}

#[test]
fn secret_pages_are_locked_dontdump_and_not_forked() {
    for config in configs::all() {
        let secret = config.factory().new(&mut known_bytes()).unwrap();
        let (start, len) = test_hooks::data_pages(&secret);
        let fork_flag = match config.backend() {
            Backend::Anonymous => "wf",
            _ => "dc",
        };
        // For a pooled secret this is its slot: the VMA found is its chunk.
        assert_locked(config.name, start, len, fork_flag);
        // Accessing does not unlock anything.
        assert!(secret.with_bytes(|b| b == known_bytes()).unwrap());
        assert_locked(config.name, start, len, fork_flag);
    }
}

#[test]
fn scratch_buffer_is_locked_dontdump_and_wiped_on_fork() {
    for config in configs::select(|c| c.path() == AccessPath::Copy) {
        let secret = config.factory().new(&mut known_bytes()).unwrap();
        let scratch = secret.with_bytes(|b| b.as_ptr() as usize).unwrap();
        let (start, len) = test_hooks::data_pages(&secret);
        assert!(
            !(start..start + len).contains(&scratch),
            "{}: the copy path handed out the secret's own pages",
            config.name
        );
        let page = common::page_size();
        assert_locked(
            &format!("{} scratch", config.name),
            scratch & !(page - 1),
            1,
            "wf",
        );
    }
}
