//! Guarantee: a secret never appears in a core dump.
//!
//! For every configuration a child process turns core dumps on
//! (`RLIMIT_CORE` unlimited), runs in a fresh directory (core_pattern `core`
//! puts the core there), creates a random secret, and holds a control value
//! in ordinary heap memory. Inside one access it hands the secret's bytes to
//! the parent by `write(2)` straight from the closure's slice into a file
//! (no copy in ordinary memory: the secret exists only in protected pages,
//! and on the copy path in the scratch buffer, wiped when the access ends).
//! Then it aborts.
//!
//! The parent finds the core file, checks the control value IS in it (so
//! the test can see the process's memory) and that no 8-byte piece of the
//! secret is (a given random 8-byte string turns up by chance in a core of
//! a few MiB with probability ~2^-40).
//!
//! A second test covers CPU registers: the core file also holds every
//! thread's registers (vector registers in the `NT_X86_XSTATE` note), and
//! the whole file is scanned, so a copy the library makes through `xmm`/`ymm`
//! registers (a `memcpy`) shows up there though every page is clean.

mod common;

use std::ffi::c_void;
use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use common::child::Child;
use common::configs::{self, Config};
use common::mem::{anon_rw, contains, hex};
use securememory::SecretFactory;

const TEST: &str = "secret_is_not_in_core_dump";
const CONTROL_ENV: &str = "SECUREMEMORY_CORE_CONTROL";
const CANNOT_DUMP: &str = "CANNOT-DUMP";
const ABORTING: &str = "CORE-CHILD: secret written, aborting";
const SECRET_FILE: &str = "secret.bin";
/// A sealed secret's ciphertext and tag, written by the child from the arena.
const CIPHERTEXT_FILE: &str = "ciphertext.bin";
/// The address of that ciphertext in the arena, in decimal.
const CIPHERTEXT_ADDR_FILE: &str = "ciphertext.addr";
/// The key it is sealed under.
const KEY_FILE: &str = "key.bin";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b
}

#[test]
fn secret_is_not_in_core_dump() {
    if let Some(config) = configs::child_config() {
        child(config);
        return;
    }
    if !core_lands_in_cwd() {
        return;
    }
    let control = random32();
    for config in configs::all() {
        in_fresh_dir(config.name, |dir| {
            check_one(TEST, config.name, dir, &control)
        });
    }
}

/// Whether core files land in the dumping process's directory; if not, a
/// loud `SKIPPED:` line and `false`.
fn core_lands_in_cwd() -> bool {
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let pattern = pattern.trim();
    if pattern.starts_with('|') || pattern.contains('/') {
        eprintln!("SKIPPED: core dump test: core_pattern is {pattern:?}; the core file would not land in the child's directory");
        return false;
    }
    true
}

/// Run `f` in a new empty directory named after `name`, deleted afterwards.
fn in_fresh_dir(name: &str, f: impl FnOnce(&Path) + std::panic::UnwindSafe) {
    let dir = std::env::temp_dir().join(format!("securememory-core-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).expect("create the child's directory");
    let d = dir.clone();
    let result = std::panic::catch_unwind(move || f(&d));
    // Core files are large: always delete them.
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// Run the child of test `test` as `role` in `dir`; it writes the secret to
/// `secret.bin` and aborts. Check that the core file holds the control
/// value and no 8-byte piece of the secret (notes included: the whole file
/// is scanned).
fn check_one(test: &str, role: &str, dir: &Path, control: &[u8; 32]) {
    let name = role;
    let out = Child::new(test, role)
        .dir(dir)
        .env(CONTROL_ENV, &hex(control))
        .run();
    let stderr = &out.stderr;
    if stderr.contains(CANNOT_DUMP) {
        eprintln!(
            "SKIPPED: core dump test ({}): the child cannot dump core\n{stderr}",
            name
        );
        return;
    }
    assert!(
        stderr.contains(ABORTING),
        "{}: the child did not get to abort\n{}",
        name,
        out.describe()
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{}\n{}",
        name,
        out.describe()
    );
    assert!(
        out.status.core_dumped(),
        "{}: no core dumped\n{}",
        name,
        out.describe()
    );

    let secret = std::fs::read(dir.join(SECRET_FILE)).expect("the secret the child wrote");
    assert_eq!(secret.len(), 32, "{}", name);
    assert!(secret.iter().any(|&b| b != 0), "{}: zero secret", name);
    let core_path = std::fs::read_dir(dir)
        .expect("read the child's directory")
        .map(|e| e.expect("dir entry").path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                ![SECRET_FILE, CIPHERTEXT_FILE, CIPHERTEXT_ADDR_FILE, KEY_FILE]
                    .contains(&n.to_str().unwrap_or(""))
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: the child dumped core but no core file is in {dir:?}",
                name
            )
        });
    let core = std::fs::read(&core_path).expect("read the core file");

    assert!(
        contains(&core, control),
        "{}: the control value is not in the {}-byte core: the test cannot see memory",
        name,
        core.len()
    );
    for (i, piece) in secret.windows(8).enumerate() {
        assert!(
            !contains(&core, piece),
            "{}: bytes {i}..{} of the secret are in the core dump",
            name,
            i + 8
        );
    }
    // A sealed secret's ciphertext: its arena is left out of the dump
    // (the core's segment over it has no bytes in the file), and so is
    // every copy of it (a copy would sit in some other segment).
    if let Ok(key) = std::fs::read(dir.join(KEY_FILE)) {
        assert_eq!(key.len(), 32, "{name}: the sealing key");
        for (i, piece) in key.windows(8).enumerate() {
            assert!(
                !contains(&core, piece),
                "{name}: bytes {i}..{} of the sealing key are in the core dump",
                i + 8
            );
        }
    }
    if let Ok(ct) = std::fs::read(dir.join(CIPHERTEXT_FILE)) {
        assert!(ct.iter().any(|&b| b != 0), "{name}: zero ciphertext");
        let at: u64 = std::fs::read_to_string(dir.join(CIPHERTEXT_ADDR_FILE))
            .expect("the arena address")
            .trim()
            .parse()
            .expect("an address");
        let segments = load_segments(&core);
        let over = segments
            .iter()
            .find(|s| s.vaddr <= at && at < s.vaddr + s.memsz)
            .unwrap_or_else(|| panic!("{name}: no segment of the core covers the arena"));
        assert_eq!(
            over.filesz, 0,
            "{name}: the arena's segment is in the core file"
        );
        for (i, piece) in ct.windows(8).enumerate() {
            if let Some(off) = find(&core, piece) {
                let seg = segments
                    .iter()
                    .find(|s| s.offset <= off && off < s.offset + s.filesz);
                panic!(
                    "{name}: bytes {i}..{} of the ciphertext are in the core dump at file offset {off:#x}, segment {seg:x?} (arena at {at:#x})",
                    i + 8
                );
            }
        }
    }
    println!(
        "{}: control found, secret absent in a {} KiB core",
        name,
        core.len() / 1024
    );
}

/// A `PT_LOAD` segment of an ELF64 core: where its bytes are in the file
/// (`filesz` 0 for a range left out of the dump) and the memory it covers.
#[derive(Debug)]
#[allow(dead_code)]
struct Segment {
    offset: u64,
    filesz: u64,
    vaddr: u64,
    memsz: u64,
}

fn load_segments(core: &[u8]) -> Vec<Segment> {
    let u16_at = |o: usize| u16::from_le_bytes(core[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(core[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(core[o..o + 8].try_into().unwrap());
    assert_eq!(&core[..4], b"\x7fELF", "not an ELF core");
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&p| u32_at(p) == 1)
        .map(|p| Segment {
            offset: u64_at(p + 8),
            vaddr: u64_at(p + 16),
            filesz: u64_at(p + 32),
            memsz: u64_at(p + 40),
        })
        .collect()
}

/// The file offset of the first occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<u64> {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p as u64)
}

fn child(config: Config) {
    let control = std::hint::black_box(unhex(&std::env::var(CONTROL_ENV).expect("control value")));
    if let Err(why) = common::rlimit::enable_core_dumps() {
        eprintln!("{CANNOT_DUMP}: {why}");
        return;
    }
    let secret = config.factory().create_random(32).expect("create_random");
    // SAFETY: open with a constant C string; the descriptor is ours.
    let fd = unsafe {
        libc::open(
            c"secret.bin".as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o600,
        )
    };
    assert!(fd >= 0, "open secret.bin");
    let written = secret
        .with_bytes(|bytes| {
            // SAFETY: writes from the closure's slice, valid for its length;
            // the kernel copies it straight into the file.
            unsafe { libc::write(fd, bytes.as_ptr() as *const c_void, bytes.len()) }
        })
        .expect("with_bytes");
    assert_eq!(written, 32);
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    if let Some((at, len)) = securememory::test_hooks::sealed_ciphertext(&secret) {
        // SAFETY: open with a constant C string; write(2) reads the arena
        // slot the hook names (mapped read-write, `len` bytes); close it.
        unsafe {
            let fd = libc::open(
                c"ciphertext.bin".as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                0o600,
            );
            assert!(fd >= 0, "open ciphertext.bin");
            assert_eq!(libc::write(fd, at as *const c_void, len), len as isize);
            libc::close(fd);
        }
        std::fs::write(CIPHERTEXT_ADDR_FILE, at.to_string()).expect("write the address");
        let key = std::fs::File::create(KEY_FILE).expect("create key.bin");
        securememory::test_hooks::write_sealing_key(&secret, key.as_raw_fd()).expect("the key");
    }
    std::hint::black_box(&control);
    std::hint::black_box(&secret);
    eprintln!("{ABORTING}");
    // SAFETY: abort never returns; it raises SIGABRT, which dumps core.
    unsafe { libc::abort() };
}

const SEALED_TEST: &str = "sealed_secret_and_ciphertext_are_not_in_core_dump";

/// Guarantee (`Layout::Sealed`): neither the plaintext nor the ciphertext
/// (its arena is `MADV_DONTDUMP`) is in the core of a child that read the
/// secret and aborted.
#[test]
fn sealed_secret_and_ciphertext_are_not_in_core_dump() {
    if common::child::role().is_some() {
        child(Config {
            name: "sealed",
            opts: securememory::Options::default().layout(securememory::Layout::Sealed),
        });
        return;
    }
    if !core_lands_in_cwd() {
        return;
    }
    let control = random32();
    in_fresh_dir("sealed", |dir| {
        check_one(SEALED_TEST, "sealed", dir, &control);
        for f in [CIPHERTEXT_FILE, KEY_FILE] {
            assert!(dir.join(f).exists(), "the sealed child wrote no {f}");
        }
    });
}

const COPIES_TEST: &str = "library_copies_leave_no_register_copy_in_core_dump";

/// The library's own user-space copies of a secret: into the caller's
/// buffer through `reader()` (window path, keyed pool) and from the
/// caller's bytes into new pages (`new`).
const COPY_CASES: [&str; 3] = ["window-reader", "anonymous-new", "pkey-reader"];

/// Guarantee: the copies the library makes leave no secret bytes in CPU
/// registers, which a core file records (every thread's vector registers
/// are in its `NT_X86_XSTATE` note). The child gets the secret into its own
/// buffer only by the library's copy (or the kernel's), writes that buffer
/// to `secret.bin` with `write(2)`, wipes it with volatile stores and
/// aborts; nothing between the copy and the abort uses vector registers.
/// A `memcpy` there left the bytes in `xmm`/`ymm` registers and this test
/// found them in the core.
#[test]
fn library_copies_leave_no_register_copy_in_core_dump() {
    if let Some(case) = common::child::role() {
        copies_child(&case);
        return;
    }
    if !core_lands_in_cwd() {
        return;
    }
    let control = random32();
    for case in COPY_CASES {
        if case == "pkey-reader"
            && !configs::protection_keys_or_skip("core dump after a keyed pool's copy")
        {
            continue;
        }
        in_fresh_dir(case, |dir| check_one(COPIES_TEST, case, dir, &control));
    }
}

/// Create a file `secret.bin` and write `bytes` to it by `write(2)`: the
/// kernel copies them, no user-space copy is made.
fn write_secret_file(bytes: &[u8]) {
    // SAFETY: open with a constant C string; write from a slice valid for
    // its length; close the descriptor opened here.
    unsafe {
        let fd = libc::open(
            c"secret.bin".as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o600,
        );
        assert!(fd >= 0, "open secret.bin");
        let n = libc::write(fd, bytes.as_ptr() as *const c_void, bytes.len());
        assert_eq!(n, bytes.len() as isize, "write secret.bin");
        libc::close(fd);
    }
}

/// 32 bytes of a fresh private page left out of core dumps: the child's own
/// buffer, so that what the test looks for is the copy's trace in registers
/// and nothing the child keeps on purpose.
fn undumped_buffer() -> &'static mut [u8] {
    let p = anon_rw(4096);
    // SAFETY: the page just mapped, never unmapped (so the 'static borrow
    // stays valid); madvise changes only its dump flag.
    unsafe {
        assert_eq!(libc::madvise(p, 4096, libc::MADV_DONTDUMP), 0, "madvise");
        std::slice::from_raw_parts_mut(p as *mut u8, 32)
    }
}

/// Die by SIGABRT at once, through a bare system call: `abort()` and any
/// other code run between the copy and the dump could overwrite the
/// registers this test looks at (glibc's own routines use them too). Run
/// right after the library's copy (test hook), so the dump shows the
/// registers as the copy left them, as a crash in any thread at that
/// instant would.
fn die_now() {
    // SAFETY: tgkill on this thread with SIGABRT, whose default action ends
    // the process with a core dump; the loop is never reached.
    unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            libc::syscall(libc::SYS_gettid),
            libc::SIGABRT,
        );
    }
    unreachable!("SIGABRT did not end the process")
}

fn copies_child(case: &str) {
    use securememory::{AccessPath, Backend, Layout, Options, PoolProtection, ProtectedFactory};
    let control = std::hint::black_box(unhex(&std::env::var(CONTROL_ENV).expect("control value")));
    if let Err(why) = common::rlimit::enable_core_dumps() {
        eprintln!("{CANNOT_DUMP}: {why}");
        return;
    }
    let window = Options::default()
        .backend(Backend::Anonymous)
        .access(AccessPath::Window);
    let keyed = Options::default()
        .layout(Layout::Pooled)
        .pool_protection(PoolProtection::ProtectionKey);
    let factory =
        ProtectedFactory::new(if case == "pkey-reader" { keyed } else { window }).expect("factory");
    let buf = undumped_buffer();
    std::hint::black_box(&control);
    if case == "anonymous-new" {
        // The kernel writes the bytes (getrandom) and reads them (write);
        // the only user-space copy is the library's, into the new pages.
        // SAFETY: getrandom writes at most 32 bytes into the buffer.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr() as *mut c_void, 32, 0) };
        assert_eq!(n, 32, "getrandom");
        write_secret_file(buf);
        eprintln!("{ABORTING}");
        securememory::test_hooks::after_secret_copy(Some(die_now));
        let secret = factory.new(buf);
        std::hint::black_box(&secret);
    } else {
        let secret = factory.create_random(32).expect("create_random");
        // On the window path the closure's slice is the secret's page; for
        // the pool it is the scratch copy (wiped afterwards).
        secret.with_bytes(write_secret_file).expect("with_bytes");
        eprintln!("{ABORTING}");
        securememory::test_hooks::after_secret_copy(Some(die_now));
        let n = secret.reader().read(buf);
        std::hint::black_box(&n);
    }
    unreachable!("the library made no copy");
}
