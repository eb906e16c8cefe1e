//! Guarantee: a secret read from standard input with `from_stdin` is never
//! in ordinary memory, and the bytes after it stay in stdin for the program.
//!
//! A child runs with a pipe as stdin carrying a 32-byte secret followed by a
//! trailer line. It creates the secret, reads the rest of stdin through std
//! (so the trailer must still be there: nothing past the secret was
//! consumed), checks the secret, then scans every readable and writable
//! mapping of its own (heap, stack, anonymous memory, `.data`) through
//! `/proc/self/mem` for the secret. `from_stdin` must leave no hit; the same
//! child using `from_reader(&mut stdin())` must leave one (std's 8 KiB
//! buffer on the heap keeps the bytes), which shows the scan sees the heap.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use common::child::CHILD_ENV;
use common::mem::{anon_rw, contains, hex};
use securememory::{Layout, Options, ProtectedFactory, SecretFactory};

const TEST: &str = "from_stdin_leaves_no_copy_in_ordinary_memory";
const SECRET_ENV: &str = "SECUREMEMORY_STDIN_SECRET";
const TRAILER: &str = "trailer: the program's own input after the secret\n";
const HITS: &str = "STDIN-CHILD hits=";

/// (role, factory layout, whether the child uses `from_reader` on std's stdin).
const CASES: [(&str, Layout, bool); 3] = [
    ("stdin-page", Layout::Page, false),
    ("stdin-pooled", Layout::Pooled, false),
    ("reader-page", Layout::Page, true),
];

/// A random secret none of whose bytes is a newline (so no line-oriented
/// reader splits it), distinctive enough that a hit is never chance.
fn random_secret() -> [u8; 32] {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    for x in &mut b {
        if *x == b'\n' {
            *x = 0xa5;
        }
    }
    b
}

#[test]
fn from_stdin_leaves_no_copy_in_ordinary_memory() {
    if let Some(role) = common::child::role() {
        child(&role);
        return;
    }
    for (role, _, control) in CASES {
        let secret = random_secret();
        let mut child = Command::new(std::env::current_exe().expect("current_exe"))
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, role)
            .env(SECRET_ENV, hex(&secret))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        {
            let mut input = child.stdin.take().expect("child stdin");
            input.write_all(&secret).expect("write the secret");
            input
                .write_all(TRAILER.as_bytes())
                .expect("write the trailer");
        }
        let out = child.wait_with_output().expect("wait for the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let describe = || format!("{role}: {}\n{stdout}\n{stderr}", out.status);
        assert!(out.status.success(), "{}", describe());
        let hits: usize = stdout
            .lines()
            .find_map(|l| l.split_once(HITS).map(|(_, n)| n))
            .unwrap_or_else(|| panic!("no hit count\n{}", describe()))
            .trim()
            .parse()
            .expect("hit count");
        if control {
            assert!(
                hits > 0,
                "{}: from_reader(stdin) left no copy: the scan cannot see the heap",
                describe()
            );
        } else {
            assert_eq!(hits, 0, "{}: the secret is in ordinary memory", describe());
        }
        println!("{role}: {hits} copies in ordinary memory");
    }
}

/// A private anonymous page holding the secret to look for, decoded from
/// hex byte by byte; the scan skips it.
struct Needle {
    page: *mut u8,
    len: usize,
}

impl Needle {
    fn from_hex(hex: &str) -> Needle {
        let len = hex.len() / 2;
        let page = anon_rw(4096) as *mut u8;
        for i in 0..len {
            let b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
            // SAFETY: `i < len <= 4096`, inside the page.
            unsafe { page.add(i).write_volatile(b) };
        }
        Needle { page, len }
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: the page lives as long as `self` and holds `len` bytes.
        unsafe { std::slice::from_raw_parts(self.page, self.len) }
    }
}

/// How many readable, writable mappings (other than the needle's page)
/// hold the secret.
fn hits(needle: &Needle) -> usize {
    let at = needle.page as usize;
    common::procfs::maps()
        .into_iter()
        .filter(|m| m.perms().starts_with("rw") && !(m.start..m.end).contains(&at))
        .filter(|m| {
            let mem = common::procfs::read_proc_mem(m.start, m.end - m.start).unwrap_or_default();
            let hit = contains(&mem, needle.bytes());
            if hit {
                eprintln!("hit in {}", m.line);
            }
            hit
        })
        .count()
}

fn child(role: &str) {
    let (_, layout, control) = CASES.into_iter().find(|c| c.0 == role).expect("known role");
    let needle = Needle::from_hex(&std::env::var(SECRET_ENV).expect("secret"));
    let factory = ProtectedFactory::new(Options::default().layout(layout)).expect("the factory");
    let secret = if control {
        factory.from_reader(&mut std::io::stdin(), 32)
    } else {
        factory.from_stdin(32)
    }
    .expect("read the secret");
    let mut rest = String::new();
    std::io::stdin()
        .read_to_string(&mut rest)
        .expect("read the rest of stdin");
    assert_eq!(
        rest, TRAILER,
        "the bytes after the secret were not left in stdin"
    );
    assert!(
        secret
            .with_bytes(|b| b == needle.bytes())
            .expect("with_bytes"),
        "the secret is not the bytes sent"
    );
    println!("{HITS}{}", hits(&needle));
}
