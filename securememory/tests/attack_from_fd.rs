//! Attacks on `from_fd` / `from_stdin`: reading past `n` bytes, short
//! reads, EOF, non-blocking and interrupted descriptors, the file position,
//! the typed errors, and what a failed read leaves in the scratch.

#[macro_use]
mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use common::procfs::{read_proc_mem, vm_lck_kib};
use securememory::{
    stats, test_hooks, AccessPath, Backend, Error, Layout, Options, PoolProtection,
    ProtectedFactory, SecretFactory,
};

fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i as u8).wrapping_mul(41) ^ (j as u8).wrapping_add(7) | 0x41)
        .collect()
}

/// Every configuration a descriptor can be read into.
fn factories() -> Vec<(&'static str, ProtectedFactory)> {
    let mut v = vec![
        (
            "memfd/page/copy",
            Options::default()
                .backend(Backend::Memfd)
                .access(AccessPath::Copy),
        ),
        (
            "memfd/guarded/copy",
            Options::default()
                .backend(Backend::Memfd)
                .layout(Layout::Guarded)
                .access(AccessPath::Copy),
        ),
        (
            "anonymous/page/window",
            Options::default()
                .backend(Backend::Anonymous)
                .access(AccessPath::Window),
        ),
        ("memfd/pooled", Options::default().layout(Layout::Pooled)),
    ];
    if securememory::protection_keys_status().is_ok() {
        v.push((
            "memfd/pooled/pkey",
            Options::default()
                .layout(Layout::Pooled)
                .pool_protection(PoolProtection::ProtectionKey),
        ));
    }
    v.into_iter()
        .map(|(n, o)| (n, ProtectedFactory::new(o).unwrap()))
        .collect()
}

fn pipe(nonblocking: bool) -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    let flags = if nonblocking { libc::O_NONBLOCK } else { 0 } | libc::O_CLOEXEC;
    // SAFETY: `fds` is a valid out-array of two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) }, 0);
    // SAFETY: both descriptors were just made and are owned here.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn read_rest(fd: &OwnedFd) -> Vec<u8> {
    let mut f = std::fs::File::from(fd.try_clone().unwrap());
    let mut out = Vec::new();
    f.read_to_end(&mut out).unwrap();
    out
}

fn scratch_zero(what: &str) {
    for (a, l) in test_hooks::scratch_regions() {
        assert!(
            read_proc_mem(a, l).unwrap().iter().all(|&b| b == 0),
            "{what}: scratch holds bytes after from_fd"
        );
    }
}

/// n bytes then a trailer: the secret is exactly the n bytes, the trailer
/// is all still in the pipe (a socket, a file at an offset too).
#[test]
fn attack_from_fd_consumes_exactly_n_bytes() {
    for (name, f) in factories() {
        for len in [1usize, 31, 200, 4096, 9000] {
            let v = value(len, len);
            let trailer = b"TRAILER-after-the-secret".to_vec();
            // A pipe.
            let (r, w) = pipe(false);
            let mut wf = std::fs::File::from(w);
            wf.write_all(&v).unwrap();
            wf.write_all(&trailer).unwrap();
            drop(wf);
            let s = f.from_fd(r.as_fd(), len).unwrap();
            assert_eq!(s.with_bytes(|b| b.to_vec()).unwrap(), v, "{name}/{len}");
            assert_eq!(read_rest(&r), trailer, "{name}/{len}: pipe trailer");
            // A stream socket, the writer in bursts.
            let (a, b) = UnixStream::pair().unwrap();
            let writer = {
                let (v, trailer) = (v.clone(), trailer.clone());
                std::thread::spawn(move || {
                    let mut b = b;
                    for chunk in v.chunks(7) {
                        b.write_all(chunk).unwrap();
                    }
                    b.write_all(&trailer).unwrap();
                })
            };
            let s = f.from_fd(a.as_fd(), len).unwrap();
            writer.join().unwrap();
            assert_eq!(
                s.with_bytes(|b| b.to_vec()).unwrap(),
                v,
                "{name}/{len} socket"
            );
            let mut rest = Vec::new();
            (&a).read_to_end(&mut rest).unwrap();
            assert_eq!(rest, trailer, "{name}/{len}: socket trailer");
            // A file at an offset: read from the position, left at pos + n.
            let mut file = tempfile_with(&[b"HEAD".as_slice(), &v, &trailer].concat());
            file.seek(SeekFrom::Start(4)).unwrap();
            let s = f.from_fd(file.as_fd(), len).unwrap();
            assert_eq!(
                s.with_bytes(|b| b.to_vec()).unwrap(),
                v,
                "{name}/{len} file"
            );
            assert_eq!(file.stream_position().unwrap(), 4 + len as u64);
            scratch_zero(name);
        }
    }
}

fn tempfile_with(bytes: &[u8]) -> std::fs::File {
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        "securememory-attack-fd-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f.write_all(bytes).unwrap();
    f
}

child_test! {
    /// EOF early, a non-blocking descriptor (empty, and with fewer bytes
    /// than asked), a write-only descriptor: `ReadFailed` with the cause, no
    /// hang, nothing locked or counted left behind, the scratch wiped.
    fn attack_from_fd_failures_are_read_failed_and_leave_nothing() {
        let fs = factories();
        // Warm up the pool chunks and this thread's scratch.
        let warm: Vec<_> = fs.iter().map(|(_, f)| f.create_random(32).unwrap()).collect();
        let before = (vm_lck_kib(), stats().bytes_locked);
        for (name, f) in &fs {
            // EOF after 10 of 32 bytes.
            let (r, w) = pipe(false);
            std::fs::File::from(w).write_all(&value(1, 10)).unwrap();
            let e = f.from_fd(r.as_fd(), 32).unwrap_err();
            assert!(
                matches!(&e, Error::ReadFailed(io) if io.kind() == std::io::ErrorKind::UnexpectedEof),
                "{name}: early EOF gave {e:?}"
            );
            // Non-blocking and empty (the writer still open): no hang.
            let (r, w) = pipe(true);
            let e = f.from_fd(r.as_fd(), 32).unwrap_err();
            assert!(
                matches!(&e, Error::ReadFailed(io) if io.kind() == std::io::ErrorKind::WouldBlock),
                "{name}: empty non-blocking gave {e:?}"
            );
            // Non-blocking with 10 bytes then empty.
            let mut wf = std::fs::File::from(w);
            wf.write_all(&value(2, 10)).unwrap();
            let e = f.from_fd(r.as_fd(), 32).unwrap_err();
            assert!(matches!(&e, Error::ReadFailed(_)), "{name}: partial non-blocking gave {e:?}");
            // Write-only descriptor.
            let e = f.from_fd(wf.as_fd(), 32).unwrap_err();
            assert!(
                matches!(&e, Error::ReadFailed(io) if io.raw_os_error() == Some(libc::EBADF)),
                "{name}: write-only gave {e:?}"
            );
            // Zero bytes asked.
            let r0 = f.from_fd(r.as_fd(), 0);
            assert!(matches!(r0, Err(Error::InvalidSize { .. })), "{name}: len 0 gave {r0:?}");
            scratch_zero(name);
        }
        let after = (vm_lck_kib(), stats().bytes_locked);
        assert_eq!(after, before, "(VmLck KiB, bytes_locked) after failed reads");
        drop(warm);
    }
}

child_test! {
    /// A signal without SA_RESTART interrupts the blocked read(2): the read
    /// goes on (EINTR retried), the secret is whole.
    fn attack_from_fd_interrupted_by_a_signal() {
        extern "C" fn on_usr1(_: libc::c_int) {}
        // SAFETY: installs a handler that does nothing, without SA_RESTART.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = 0;
            assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        }
        for (name, f) in factories() {
            let (r, w) = pipe(false);
            let v = value(9, 64);
            let (tx, rx) = std::sync::mpsc::channel();
            let reader = std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tx.send(unsafe { libc::gettid() }).unwrap();
                f.from_fd(r.as_fd(), 64).map(|s| s.with_bytes(|b| b.to_vec()).unwrap())
            });
            let tid = rx.recv().unwrap();
            let mut wf = std::fs::File::from(w);
            wf.write_all(&v[..5]).unwrap();
            for _ in 0..20 {
                std::thread::sleep(std::time::Duration::from_millis(5));
                // SAFETY: signals a thread of this process.
                unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1) };
            }
            wf.write_all(&v[5..]).unwrap();
            let got = reader.join().unwrap();
            assert_eq!(got.unwrap(), v, "{name}");
        }
    }
}
