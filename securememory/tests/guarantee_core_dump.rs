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

mod common;

use std::ffi::c_void;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use common::child::Child;
use common::configs::{self, Config};
use securememory::SecretFactory;

const TEST: &str = "secret_is_not_in_core_dump";
const CONTROL_ENV: &str = "SECUREMEMORY_CORE_CONTROL";
const CANNOT_DUMP: &str = "CANNOT-DUMP";
const ABORTING: &str = "CORE-CHILD: secret written, aborting";
const SECRET_FILE: &str = "secret.bin";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

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

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    // SAFETY: memmem reads only within the two slices, given with their lengths.
    let p = unsafe {
        libc::memmem(
            hay.as_ptr() as *const c_void,
            hay.len(),
            needle.as_ptr() as *const c_void,
            needle.len(),
        )
    };
    !p.is_null()
}

#[test]
fn secret_is_not_in_core_dump() {
    if let Some(config) = configs::child_config() {
        child(config);
        return;
    }
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let pattern = pattern.trim();
    if pattern.starts_with('|') || pattern.contains('/') {
        eprintln!("SKIPPED: core dump test: core_pattern is {pattern:?}; the core file would not land in the child's directory");
        return;
    }
    let control = random32();
    for config in configs::all() {
        let dir = std::env::temp_dir().join(format!(
            "securememory-core-{}-{}",
            std::process::id(),
            config.name
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("create the child's directory");
        let result = std::panic::catch_unwind(|| check_one(&config, &dir, &control));
        // Core files are large: always delete them.
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }
}

fn check_one(config: &Config, dir: &Path, control: &[u8; 32]) {
    let out = Child::new(TEST, config.name)
        .dir(dir)
        .env(CONTROL_ENV, &hex(control))
        .run();
    let stderr = &out.stderr;
    if stderr.contains(CANNOT_DUMP) {
        eprintln!(
            "SKIPPED: core dump test ({}): the child cannot dump core\n{stderr}",
            config.name
        );
        return;
    }
    assert!(
        stderr.contains(ABORTING),
        "{}: the child did not get to abort\n{}",
        config.name,
        out.describe()
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{}\n{}",
        config.name,
        out.describe()
    );
    assert!(
        out.status.core_dumped(),
        "{}: no core dumped\n{}",
        config.name,
        out.describe()
    );

    let secret = std::fs::read(dir.join(SECRET_FILE)).expect("the secret the child wrote");
    assert_eq!(secret.len(), 32, "{}", config.name);
    assert!(
        secret.iter().any(|&b| b != 0),
        "{}: zero secret",
        config.name
    );
    let core_path = std::fs::read_dir(dir)
        .expect("read the child's directory")
        .map(|e| e.expect("dir entry").path())
        .find(|p| p.file_name().is_some_and(|n| n != SECRET_FILE))
        .unwrap_or_else(|| {
            panic!(
                "{}: the child dumped core but no core file is in {dir:?}",
                config.name
            )
        });
    let core = std::fs::read(&core_path).expect("read the core file");

    assert!(
        contains(&core, control),
        "{}: the control value is not in the {}-byte core: the test cannot see memory",
        config.name,
        core.len()
    );
    for (i, piece) in secret.windows(8).enumerate() {
        assert!(
            !contains(&core, piece),
            "{}: bytes {i}..{} of the secret are in the core dump",
            config.name,
            i + 8
        );
    }
    println!(
        "{}: control found, secret absent in a {} KiB core",
        config.name,
        core.len() / 1024
    );
}

/// Raise `RLIMIT_CORE` and make sure this process is dumpable; `Err(why)` if not.
fn enable_core_dumps() -> Result<(), String> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit/prctl read or write only the values passed;
    // they change only this child process's settings.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_CORE, &unlimited) != 0
            && libc::getrlimit(libc::RLIMIT_CORE, &mut now) == 0
        {
            now.rlim_cur = now.rlim_max;
            libc::setrlimit(libc::RLIMIT_CORE, &now);
        }
        libc::getrlimit(libc::RLIMIT_CORE, &mut now);
        if now.rlim_cur < 1 << 20 {
            return Err(format!("RLIMIT_CORE stays at {} bytes", now.rlim_cur));
        }
        if libc::prctl(libc::PR_GET_DUMPABLE) != 1 && libc::prctl(libc::PR_SET_DUMPABLE, 1) != 0 {
            return Err("the process is not dumpable".into());
        }
    }
    Ok(())
}

fn child(config: Config) {
    let control = std::hint::black_box(unhex(&std::env::var(CONTROL_ENV).expect("control value")));
    if let Err(why) = enable_core_dumps() {
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
    std::hint::black_box(&control);
    std::hint::black_box(&secret);
    eprintln!("{ABORTING}");
    // SAFETY: abort never returns; it raises SIGABRT, which dumps core.
    unsafe { libc::abort() };
}
