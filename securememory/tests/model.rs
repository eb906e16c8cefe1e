//! A model-based randomized test of the public API: random sequences of
//! create, access, nested access, reader reads, accesses from another thread,
//! close, drop and fork, over secrets of every configuration at once, checked
//! step by step against a simple model (a map from secret to its bytes, or
//! "closed").
//!
//! After every step:
//! - every open secret reads exactly its model bytes, through `with_bytes`,
//!   nested accesses and the reader alike; a closed one fails with `Closed`;
//! - no open secret is readable at rest (`is_readable_now()` is false);
//! - in a fork child, every secret of the parent fails with `Forked` (never
//!   `Ok`, never zeros) and the child can make and read secrets of its own.
//!
//! At the end of each sequence everything is dropped and the books balance:
//! `stats().in_use` is back to its start, and the bytes the library says it
//! holds locked equal what the kernel says the process holds (`VmLck`).
//!
//! The whole run happens in a child process of its own (process-wide
//! counters move only by what it does). `SECUREMEMORY_MODEL_CASES=N` runs
//! N sequences instead of the default 64.
#![cfg(target_os = "linux")]

#[macro_use]
mod common;

use std::io::Read;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use securememory::{Error, ProtectedFactory, Secret, SecretFactory};

use common::configs::{self, Config};
use common::procfs;

/// One step of a sequence. Indices are taken modulo the number of live
/// secrets or configurations, so every generated sequence is valid.
#[derive(Clone, Debug)]
enum Op {
    Create { config: usize, len: usize },
    CreateRandom { config: usize, len: usize },
    Access { id: usize },
    Nested { outer: usize, inner: usize },
    Read { id: usize, chunk: usize },
    FromOtherThread { id: usize },
    Close { id: usize },
    Drop { id: usize },
    Fork,
}

fn op() -> impl Strategy<Value = Op> {
    // Lengths around the interesting edges: tiny, the pool's largest slot,
    // one page, and more than the scratch buffer (the window fallback).
    let len = prop_oneof![
        1usize..=64,
        1000usize..=1024,
        4090usize..=4100,
        Just(12 * 1024),
    ];
    prop_oneof![
        4 => (any::<usize>(), len.clone()).prop_map(|(config, len)| Op::Create { config, len }),
        2 => (any::<usize>(), len).prop_map(|(config, len)| Op::CreateRandom { config, len }),
        4 => any::<usize>().prop_map(|id| Op::Access { id }),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(outer, inner)| Op::Nested { outer, inner }),
        2 => (any::<usize>(), 1usize..=64).prop_map(|(id, chunk)| Op::Read { id, chunk }),
        1 => any::<usize>().prop_map(|id| Op::FromOtherThread { id }),
        2 => any::<usize>().prop_map(|id| Op::Close { id }),
        2 => any::<usize>().prop_map(|id| Op::Drop { id }),
        1 => Just(Op::Fork),
    ]
}

/// A live secret and what the model says about it.
struct Entry {
    secret: Secret,
    /// `None` once closed.
    bytes: Option<Vec<u8>>,
    config: &'static str,
}

struct World {
    configs: Vec<Config>,
    factories: Vec<ProtectedFactory>,
    live: Vec<Entry>,
    counter: u8,
}

impl World {
    fn new() -> World {
        let configs = configs::all_with_sealed();
        let factories = configs.iter().map(Config::factory).collect();
        World {
            configs,
            factories,
            live: Vec::new(),
            counter: 0,
        }
    }

    fn pick(&self, id: usize) -> Option<usize> {
        (!self.live.is_empty()).then(|| id % self.live.len())
    }

    /// Distinctive bytes for a new secret.
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        self.counter = self.counter.wrapping_add(1);
        let c = self.counter;
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(c) | 1)
            .collect()
    }

    /// Whether configuration `i` refuses `len` bytes: a sealed secret past
    /// `SEALED_MAX_LEN`.
    fn refuses(&self, i: usize, len: usize) -> bool {
        self.configs[i].layout() == securememory::Layout::Sealed
            && len > securememory::SEALED_MAX_LEN
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Create { config, len } => {
                let i = config % self.configs.len();
                let expected = self.bytes(len);
                let mut src = expected.clone();
                if self.refuses(i, len) {
                    return match self.factories[i].new(&mut src) {
                        Err(securememory::Error::InvalidSize { .. }) if src == expected => Ok(()),
                        other => Err(format!(
                            "sealed {len}: expected InvalidSize and the source kept, got {other:?}"
                        )),
                    };
                }
                let secret = self.factories[i]
                    .new(&mut src)
                    .map_err(|e| format!("create {len} on {}: {e}", self.configs[i].name))?;
                if src.iter().any(|&b| b != 0) {
                    return Err("the source was not wiped".into());
                }
                self.live.push(Entry {
                    secret,
                    bytes: Some(expected),
                    config: self.configs[i].name,
                });
            }
            Op::CreateRandom { config, len } => {
                let i = config % self.configs.len();
                if self.refuses(i, len) {
                    return match self.factories[i].create_random(len) {
                        Err(securememory::Error::InvalidSize { .. }) => Ok(()),
                        other => Err(format!("sealed {len}: expected InvalidSize, got {other:?}")),
                    };
                }
                let secret = self.factories[i]
                    .create_random(len)
                    .map_err(|e| format!("create_random {len} on {}: {e}", self.configs[i].name))?;
                let bytes = secret
                    .with_bytes(<[u8]>::to_vec)
                    .map_err(|e| format!("first read of a random secret: {e}"))?;
                if bytes.len() != len {
                    return Err("random secret of the wrong length".into());
                }
                self.live.push(Entry {
                    secret,
                    bytes: Some(bytes),
                    config: self.configs[i].name,
                });
            }
            Op::Access { id } => {
                if let Some(k) = self.pick(id) {
                    check_access(&self.live[k])?;
                }
            }
            Op::Nested { outer, inner } => {
                if let (Some(a), Some(b)) = (self.pick(outer), self.pick(inner)) {
                    let (ea, eb) = (&self.live[a], &self.live[b]);
                    let r = ea.secret.with_bytes(|x| {
                        let inner = eb.secret.with_bytes(<[u8]>::to_vec);
                        (x.to_vec(), inner)
                    });
                    match (r, &ea.bytes) {
                        (Ok((x, inner)), Some(want)) => {
                            if &x != want {
                                return Err(format!(
                                    "outer access of {} saw wrong bytes",
                                    ea.config
                                ));
                            }
                            expect(eb, inner, "nested access")?;
                        }
                        (Err(Error::Closed), None) => {}
                        (r, _) => {
                            return Err(format!(
                                "outer access of {}: {:?}",
                                ea.config,
                                r.map(|_| ())
                            ))
                        }
                    }
                }
            }
            Op::Read { id, chunk } => {
                if let Some(k) = self.pick(id) {
                    let e = &self.live[k];
                    let mut reader = e.secret.reader();
                    let mut got = Vec::new();
                    let mut buf = vec![0u8; chunk];
                    let r = loop {
                        match reader.read(&mut buf) {
                            Ok(0) => break Ok(got),
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                            Err(err) => break Err(err),
                        }
                    };
                    match (&r, &e.bytes) {
                        (Ok(got), Some(want)) if got == want => {}
                        (Err(_), None) => {}
                        _ => return Err(format!("reader on {}: wrong outcome", e.config)),
                    }
                }
            }
            Op::FromOtherThread { id } => {
                if let Some(k) = self.pick(id) {
                    let e = &self.live[k];
                    let other = std::thread::scope(|s| {
                        let h = s.spawn(|| check_access(e));
                        let here = check_access(e);
                        let there = h
                            .join()
                            .map_err(|_| "the other thread panicked".to_string());
                        here.and(there?)
                    });
                    other?;
                }
            }
            Op::Close { id } => {
                if let Some(k) = self.pick(id) {
                    let e = &mut self.live[k];
                    e.secret
                        .close()
                        .map_err(|err| format!("close of {}: {err}", e.config))?;
                    e.bytes = None;
                    if !e.secret.is_closed() {
                        return Err("is_closed false after close".into());
                    }
                }
            }
            Op::Drop { id } => {
                if let Some(k) = self.pick(id) {
                    self.live.swap_remove(k);
                }
            }
            Op::Fork => self.fork()?,
        }
        for e in &self.live {
            if e.bytes.is_some() && e.secret.is_readable_now().unwrap_or(true) {
                return Err(format!("a {} secret is readable at rest", e.config));
            }
        }
        Ok(())
    }

    /// Fork; the child checks that none of the parent's secrets reads, and
    /// that it can make and read secrets of its own.
    fn fork(&self) -> Result<(), String> {
        // SAFETY: the child only uses the library and `_exit`s; this test
        // runs on one thread (the child process runs one test, alone).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err("fork failed".into());
        }
        if pid == 0 {
            let code = self.in_fork_child();
            // SAFETY: end the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child just made.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            Ok(())
        } else {
            Err(format!("fork child failed with status {status:#x}"))
        }
    }

    fn in_fork_child(&self) -> i32 {
        for e in &self.live {
            match e.secret.with_bytes(|b| b.to_vec()) {
                Err(Error::Forked) => {}
                Err(Error::Closed) if e.bytes.is_none() => {}
                _ => return 10,
            }
            let mut buf = [0u8; 8];
            if e.secret.reader().read(&mut buf).is_ok() {
                return 11;
            }
        }
        for (f, c) in self.factories.iter().zip(&self.configs) {
            let Ok(s) = f.new(&mut [7u8; 40]) else {
                eprintln!("fork child: cannot create on {}", c.name);
                return 12;
            };
            if !matches!(s.with_bytes(|b| b == [7u8; 40]), Ok(true)) {
                return 13;
            }
        }
        0
    }
}

fn check_access(e: &Entry) -> Result<(), String> {
    expect(e, e.secret.with_bytes(<[u8]>::to_vec), "access")
}

fn expect(e: &Entry, got: securememory::Result<Vec<u8>>, what: &str) -> Result<(), String> {
    match (got, &e.bytes) {
        (Ok(b), Some(want)) if &b == want => Ok(()),
        (Err(Error::Closed), None) => Ok(()),
        (got, want) => Err(format!(
            "{what} of a {} secret ({}): {}",
            e.config,
            if want.is_some() { "open" } else { "closed" },
            match got {
                Ok(_) => "wrong bytes".to_string(),
                Err(err) => err.to_string(),
            }
        )),
    }
}

/// What the library says it holds locked, and what the kernel says.
fn books() -> (u64, u64) {
    (
        securememory::stats().bytes_locked,
        procfs::vm_lck_kib() * 1024,
    )
}

child_test! {
    fn random_sequences_match_the_model() {
        let cases = std::env::var("SECUREMEMORY_MODEL_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64);
        let in_use_at_start = securememory::stats().in_use;
        let mut runner = TestRunner::new(RunnerConfig {
            cases,
            failure_persistence: None,
            ..RunnerConfig::default()
        });
        let result = runner.run(&prop::collection::vec(op(), 1..40), |ops| {
            let mut world = World::new();
            for (step, op) in ops.iter().enumerate() {
                if let Err(why) = world.apply(op) {
                    return Err(TestCaseError::fail(format!("step {step} {op:?}: {why}")));
                }
            }
            drop(world);
            let in_use = securememory::stats().in_use;
            prop_assert_eq!(in_use, in_use_at_start, "secrets still in use after dropping all");
            let (library, kernel) = books();
            prop_assert_eq!(library, kernel, "locked bytes: library's books vs VmLck");
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}
