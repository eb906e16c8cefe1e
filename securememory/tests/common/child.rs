//! Re-executing this test binary as a child process that runs one test
//! alone (`--exact <test> --nocapture --test-threads=1`), with
//! [`CHILD_ENV`] naming the role it plays (a configuration name, or the
//! test's own name): for tests whose outcome is a dead process, that read
//! process-wide figures, fork, or drop capabilities.

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Set in a re-executed test binary to the role the child plays; its
/// presence is what makes a test act as the child.
pub const CHILD_ENV: &str = "SECUREMEMORY_TEST_CHILD";

/// Printed by a worker on stdout when it got to its end (see [`done`]), so
/// the parent can tell "passed" from "ran no test at all" (a wrong
/// `--exact` name exits 0).
pub const DONE: &str = "TEST-CHILD-DONE";

/// The role of this process, if it is a re-executed child.
pub fn role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Whether this process is the child whose role is `test`.
pub fn is_child(test: &str) -> bool {
    role().as_deref() == Some(test)
}

/// Say the worker got to its end (see [`DONE`]).
pub fn done() {
    println!("{DONE}");
}

/// A re-execution of this test binary, to be started with [`Child::run`].
pub struct Child {
    cmd: Command,
    /// `<test>-<role>`, naming the file [`Child::run_merged`] collects output in.
    name: String,
}

impl Child {
    /// Run only the test `test`, on one test thread, with [`CHILD_ENV`] set to `role`.
    pub fn new(test: &str, role: &str) -> Child {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, role);
        Child {
            cmd,
            name: format!("{test}-{role}"),
        }
    }

    /// Run in directory `dir`.
    pub fn dir(mut self, dir: &Path) -> Child {
        self.cmd.current_dir(dir);
        self
    }

    /// Set the environment variable `key` to `value` in the child.
    pub fn env(mut self, key: &str, value: &str) -> Child {
        self.cmd.env(key, value);
        self
    }

    /// Drop each capability of `caps` from the capability bounding set
    /// between fork and exec: root regains every capability of the bounding
    /// set at `exec`, so this is the way to start a child none of whose
    /// threads (the test harness's main thread included) holds them.
    pub fn drop_bounding(mut self, caps: &[u32]) -> Child {
        if caps.is_empty() {
            return self;
        }
        let caps = caps.to_vec();
        // SAFETY: runs in the forked child before exec; it only calls prctl
        // (async-signal-safe) and allocates nothing.
        unsafe {
            self.cmd.pre_exec(move || {
                for &cap in &caps {
                    if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        self
    }

    /// Start the child and wait for it.
    pub fn run(mut self) -> Run {
        let out = self.cmd.output().expect("spawn the child test process");
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Start the child with stdout and stderr merged into one text, and kill
    /// it if it is still running after `limit` (a hang or deadlock): the
    /// status is `None` then.
    pub fn run_merged(mut self, limit: Duration) -> (Option<ExitStatus>, String) {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let out_path = std::env::temp_dir().join(format!(
            "securememory-child-{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            self.name
        ));
        let out = std::fs::File::create(&out_path).expect("child output file");
        let mut child = self
            .cmd
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the child") {
                break Some(status);
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        let _ = std::fs::remove_file(&out_path);
        (status, text)
    }

    /// [`Child::run_merged`], passing its SKIPPED notes through: `Ok(output)`
    /// if it exited 0 and printed [`DONE`], else what went wrong (`hang`
    /// names a kill after `limit`) with the output.
    pub fn run_until_done(self, limit: Duration, hang: &str) -> Result<String, String> {
        let (status, text) = self.run_merged(limit);
        for line in text.lines().filter(|l| l.starts_with("SKIPPED:")) {
            eprintln!("{line}");
        }
        match status {
            None => Err(format!("killed after {limit:?} ({hang})\n{text}")),
            Some(s) if s.success() && text.contains(DONE) => Ok(text),
            Some(s) => Err(format!("{}\n{text}", describe(s))),
        }
    }
}

/// What a child process did.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The status and both output streams, for messages.
    pub fn describe(&self) -> String {
        format!(
            "status: {}\n--- child stdout ---\n{}\n--- child stderr ---\n{}",
            describe(self.status),
            self.stdout,
            self.stderr
        )
    }

    /// Panic (showing the child's output) unless it exited 0 and printed [`DONE`].
    pub fn assert_done(&self, what: &str) {
        assert!(
            self.status.success() && self.stdout.contains(DONE),
            "{what}: worker failed\n{}",
            self.describe()
        );
    }
}

/// "exit code N" or "killed by signal N".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => format!("{status:?}"),
    }
}

/// A test whose body runs in a worker: in the child (role set), run `body`
/// and say [`done`]; in the parent, start the child as `as_role` with the
/// capabilities `drop_bounding` dropped, fail unless it got to its end, and
/// pass its stdout through.
pub fn in_worker(test: &str, as_role: &str, drop_bounding: &[u32], body: impl FnOnce()) {
    if role().is_some() {
        body();
        done();
        return;
    }
    let run = Child::new(test, as_role).drop_bounding(drop_bounding).run();
    run.assert_done(test);
    print!("{}", run.stdout);
}

/// Run `body` in a re-executed copy of this test binary that runs only the
/// test `test` (which must be the name of the calling `#[test]` function at
/// the crate root), alone and on one thread, so that process-wide figures
/// (counters, locked memory, mappings) move only by what `body` does. In the
/// parent: spawn the child and fail unless it ran that one test and passed.
pub fn in_child(test: &str, body: impl FnOnce()) {
    if is_child(test) {
        body();
        return;
    }
    let run = Child::new(test, test).run();
    // Pass the child's notes (SKIPPED lines, say) through to the parent.
    for line in run.stderr.lines().filter(|l| l.starts_with("SKIPPED:")) {
        eprintln!("{line}");
    }
    assert!(
        run.status.success(),
        "child for {test} failed\n{}",
        run.describe()
    );
    assert!(
        run.stdout.contains("test result: ok. 1 passed"),
        "child for {test} did not run exactly that test\n{}",
        run.describe()
    );
}

/// A `#[test]` whose body runs in a child process of its own (see
/// [`in_child`]). Use at the crate root of a test file that declares the
/// `common` module with `#[macro_use]`.
#[allow(unused_macros)]
macro_rules! child_test {
    ($(#[$meta:meta])* fn $name:ident() $body:block) => {
        $(#[$meta])*
        #[test]
        fn $name() {
            $crate::common::child::in_child(stringify!($name), || $body)
        }
    };
}

/// [`in_child`] for a test whose failure may be a hang (a purge or a
/// signal waiting forever): the child says it got to its end ([`done`]),
/// and one that outlives `limit` is killed and fails the test (`hang`
/// says what the hang means).
pub fn in_child_within(test: &str, limit: Duration, hang: &str, body: impl FnOnce()) {
    if is_child(test) {
        body();
        done();
        return;
    }
    let out = Child::new(test, test)
        .run_until_done(limit, hang)
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    print!("{out}");
}
