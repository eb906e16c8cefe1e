//! Guarantee: a secret is not inherited by a fork child, in every
//! configuration (backends memfd, anonymous, memfd_secret; layouts page,
//! guarded, pooled).
//!
//! Each configuration runs in a worker process (this binary re-executed with
//! one test thread, so the harness's other thread is idle and holds no lock
//! across the fork). The worker creates a secret and forks; the child checks
//! that
//! - (a) the secret's data pages show zeros through `/proc/self/mem`
//!   (anonymous memory: `MADV_WIPEONFORK`) or are not mapped at all (shared
//!   memory: `MADV_DONTFORK`; the read fails) and never hold the secret,
//! - (b) `with_bytes`, `with_bytes_func` and `reader` fail with
//!   `Error::Forked` (never zeros, never a crash) without running the closure,
//! - (c) dropping the secret does not crash,
//!
//! and reports by exit code. The worker then checks the child's status and
//! that the secret still works in the parent.
//!
//! Control (the test can tell): the worker then undoes the library's fork
//! advice on the data pages itself (`MADV_DOFORK` / `MADV_KEEPONFORK`) and
//! forks again; that child's memory check must now fail (it sees the secret,
//! or a mapping where there must be none).

mod common;
mod support_proc;

use std::io::Read;

use common::child::{self, Child};
use common::configs::{self, Config};
use common::library_error;
use common::procfs::{mapping_at, read_proc_mem};
use securememory::test_hooks::{data_address, data_pages};
use securememory::{Error, ProtectedFactory, Secret, SecretFactory};
use support_proc::fork_and_wait;

const TEST: &str = "fork_child_never_sees_a_secret";
const SECRET: &[u8; 32] = b"fork-guarantee secret: 7f3a9c1e!";

#[test]
fn fork_child_never_sees_a_secret() {
    if let Some(cfg) = configs::child_config() {
        worker(cfg);
        return;
    }
    let configs = configs::default_path_configs();
    for cfg in &configs {
        let run = Child::new(TEST, cfg.name).run();
        run.assert_done(cfg.name);
        print!("{}", run.stdout);
        run.stderr
            .lines()
            .filter(|l| l.contains("control"))
            .for_each(|l| println!("  {l}"));
    }
    assert!(
        configs.len() >= 5,
        "too few configurations ran: {configs:?}"
    );
}

fn worker(cfg: Config) {
    let factory = ProtectedFactory::new(cfg.options()).expect("factory");
    let mut src = *SECRET;
    let secret = factory.new(&mut src).expect("create");
    assert_eq!(secret.with_bytes(|b| b.to_vec()).unwrap(), SECRET);
    let addr = data_address(&secret);
    let (pages, pages_len) = data_pages(&secret);
    // In the parent the data is mapped: "no mapping" in the child means something.
    assert!(
        mapping_at(addr).is_some(),
        "{}: secret not mapped in the parent",
        cfg.name
    );

    let mut slot = Some(secret);
    let status = fork_and_wait(|| match in_child(cfg, &mut slot, addr, pages, pages_len) {
        Ok(()) => 0,
        Err(why) => {
            eprintln!("fork child ({}): {why}", cfg.name);
            1
        }
    });
    assert_eq!(
        status.code(),
        Some(0),
        "{}: fork child failed: {}",
        cfg.name,
        child::describe(status)
    );

    // The parent's secret is untouched by the child's checks and drop.
    let secret = slot.expect("the parent still owns the secret");
    control(cfg, addr, pages, pages_len);
    assert_eq!(
        secret.with_bytes(|b| b.to_vec()).unwrap(),
        SECRET,
        "{}",
        cfg.name
    );
    let mut out = Vec::new();
    secret.reader().read_to_end(&mut out).unwrap();
    assert_eq!(out, SECRET);
    assert!(!secret.is_readable_now().unwrap());
    secret.close().unwrap();
    println!(
        "{}: fork child saw no secret, got Error::Forked, dropped it cleanly",
        cfg.name
    );
    child::done();
}

/// Without the library's fork advice the child's memory check must fail.
fn control(cfg: Config, addr: usize, pages: usize, pages_len: usize) {
    let page = common::page_size();
    let start = pages & !(page - 1);
    let len = (pages + pages_len).next_multiple_of(page) - start;
    let (undo, redo) = if cfg.shared() {
        (libc::MADV_DOFORK, libc::MADV_DONTFORK)
    } else {
        (libc::MADV_KEEPONFORK, libc::MADV_WIPEONFORK)
    };
    let advise = |advice| {
        // SAFETY: `[start, start + len)` is the page range of this process's
        // own secret mapping; fork advice changes no byte and no protection.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, advice) };
        assert_eq!(rc, 0, "madvise: {}", std::io::Error::last_os_error());
    };
    advise(undo);
    let status = fork_and_wait(|| match check_memory(cfg, addr, pages, pages_len) {
        Err(why) => {
            eprintln!("control fork child ({}), as expected: {why}", cfg.name);
            0
        }
        Ok(()) => 1,
    });
    advise(redo);
    assert_eq!(
        status.code(),
        Some(0),
        "{}: control: with the fork advice undone the child's check still passed: it cannot tell",
        cfg.name
    );
}

/// The checks run in the fork child.
fn in_child(
    cfg: Config,
    slot: &mut Option<Secret>,
    addr: usize,
    pages: usize,
    pages_len: usize,
) -> Result<(), String> {
    let secret = slot.take().ok_or("no secret")?;
    check_memory(cfg, addr, pages, pages_len)?;
    check_access(secret)
}

/// (a) What the child's address space holds where the secret was.
fn check_memory(cfg: Config, addr: usize, pages: usize, pages_len: usize) -> Result<(), String> {
    let mapped = mapping_at(addr);
    let seen = read_proc_mem(pages, pages_len);
    if let Ok(bytes) = &seen {
        if bytes.windows(SECRET.len()).any(|w| w == SECRET) {
            return Err("the child read the secret's bytes through /proc/self/mem".into());
        }
    }
    if cfg.shared() {
        // MADV_DONTFORK: the child has no mapping there at all.
        if let Some(m) = mapped {
            return Err(format!(
                "the secret's pages are mapped in the child: {}",
                m.line
            ));
        }
        match &seen {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EFAULT)) => {}
            other => {
                return Err(format!(
                    "reading the unmapped range: expected EIO/EFAULT, got {other:?}"
                ))
            }
        }
    } else {
        // MADV_WIPEONFORK: still mapped, every byte zero.
        if mapped.is_none() {
            return Err("WIPEONFORK mapping missing in the child".into());
        }
        match &seen {
            Ok(b) if b.len() == pages_len && b.iter().all(|&x| x == 0) => {}
            other => return Err(format!("expected {pages_len} zero bytes, got {other:?}")),
        }
    }
    Ok(())
}

fn check_access(secret: Secret) -> Result<(), String> {
    // (b) Every access is a typed error; the closure never runs.
    let mut ran = false;
    match secret.with_bytes(|_| ran = true) {
        Err(Error::Forked) => {}
        other => return Err(format!("with_bytes in the child: {other:?}")),
    }
    match secret.with_bytes_func(|b| {
        ran = true;
        Ok::<_, Error>(b.to_vec())
    }) {
        Err(Error::Forked) => {}
        other => return Err(format!("with_bytes_func in the child: {other:?}")),
    }
    if ran {
        return Err("an access closure ran in the child".into());
    }
    let mut buf = [0u8; 64];
    match secret.reader().read(&mut buf) {
        Err(e) if matches!(library_error(&e), Some(Error::Forked)) => {}
        other => return Err(format!("reader in the child: {other:?}")),
    }
    if secret.is_readable_now().map_err(|e| e.to_string())? {
        return Err("is_readable_now in the child".into());
    }

    // (c) Dropping it in the child is harmless.
    drop(secret);
    Ok(())
}
