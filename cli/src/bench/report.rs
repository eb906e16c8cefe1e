//! The bench's output: the table for people (`Display`) and the JSON object
//! for scripts.

use std::fmt;
use std::time::Duration;

use securememory::{AccessPath, Secret};
use serde::Serialize;

use super::capacity::Capacity;
use super::measure::{Plan, Samples};
use crate::units::Bytes;
use targets::Target;

mod targets;

/// One measured row, before the floor is known.
pub struct Timing {
    pub name: &'static str,
    pub imp: &'static str,
    pub threads: usize,
    pub path: &'static str,
    pub ns_per_op: f64,
}

impl Timing {
    pub fn new(
        name: &'static str,
        imp: &'static str,
        threads: usize,
        secret: &Secret,
        ns_per_op: f64,
    ) -> Timing {
        let path = match secret.access_path() {
            AccessPath::Copy => "copy",
            AccessPath::Window => "window",
            AccessPath::Auto => "auto",
        };
        Timing {
            name,
            imp,
            threads,
            path,
            ns_per_op,
        }
    }

    /// A row with no secret (the real client's plain-array baseline).
    pub fn plain(name: &'static str, imp: &'static str, threads: usize, ns_per_op: f64) -> Timing {
        Timing {
            name,
            imp,
            threads,
            path: "-",
            ns_per_op,
        }
    }
}

/// One row of the table and of the JSON `rows`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub name: &'static str,
    #[serde(rename = "impl")]
    pub imp: &'static str,
    pub threads: usize,
    /// `"copy"` or `"window"`: the access path the row's secret used.
    pub path: &'static str,
    pub ns_per_op: f64,
    pub ratio_to_floor: f64,
}

/// The facts printed above the table.
pub struct Header {
    plan: &'static str,
    cores: usize,
    kernel: String,
    memlock_soft: Option<u64>,
    memlock_hard: Option<u64>,
    cap_ipc_lock: bool,
    floor: Samples,
    elapsed: Duration,
}

impl Header {
    pub fn collect(plan: &Plan, cores: usize, floor: Samples, elapsed: Duration) -> Header {
        let sys = securememory::system::report();
        Header {
            plan: plan.name,
            cores,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into()),
            memlock_soft: sys.memlock_soft,
            memlock_hard: sys.memlock_hard,
            cap_ipc_lock: sys.cap_ipc_lock,
            floor,
            elapsed,
        }
    }
}

/// Everything the run found.
pub struct Report {
    header: Header,
    floor_ns: f64,
    rows: Vec<Row>,
    pooled: Capacity,
    page: Capacity,
    sealed: Capacity,
    notes: Vec<String>,
}

#[derive(Serialize)]
struct Json<'a> {
    floor_ns: f64,
    rows: &'a [Row],
    targets: Vec<Target>,
    capacity_32b: u64,
    /// Sealed 32-byte secrets held under a 64 KiB memlock limit.
    capacity_sealed_32b: u64,
    /// The real client (a 1 KiB ChaCha20-Poly1305 message keyed inside
    /// `with_bytes`), one thread: ns over the plain-array key, per impl.
    client_overhead_ns: Vec<(&'a str, f64)>,
    pooled_vs_page_new_close: Option<f64>,
    /// `null` where the machine has no protection keys.
    pooled_pkey_vs_page_new_close: Option<f64>,
}

/// The error up to its first full stop (the rest is advice on raising limits).
fn first_sentence(e: &str) -> &str {
    e.split_once(". ").map_or(e, |(first, _)| first)
}

impl Report {
    pub fn new(
        header: Header,
        timings: Vec<Timing>,
        [pooled, page, sealed]: [Capacity; 3],
        notes: Vec<String>,
    ) -> Report {
        let floor_ns = header.floor.median();
        let rows = timings
            .into_iter()
            .map(|t| Row {
                name: t.name,
                imp: t.imp,
                threads: t.threads,
                path: t.path,
                ns_per_op: t.ns_per_op,
                ratio_to_floor: t.ns_per_op / floor_ns,
            })
            .collect();
        Report {
            header,
            floor_ns,
            rows,
            pooled,
            page,
            sealed,
            notes,
        }
    }

    /// The ns/op of a row; `None` where it was not run (an implementation
    /// this machine lacks).
    fn ns(&self, name: &str, imp: &str, threads: usize) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.name == name && r.imp == imp && r.threads == threads)
            .map(|r| r.ns_per_op)
    }

    /// One-page new+close over the new+close of `pool` (an impl name), one
    /// thread; `None` where either row was not run.
    fn pooled_vs_page(&self, pool: &str) -> Option<f64> {
        Some(self.ns("new_close", "protected", 1)? / self.ns("new_close", pool, 1)?)
    }

    /// The parallel form's thread count, if this run had one.
    fn parallel(&self) -> Option<usize> {
        self.rows.iter().map(|r| r.threads).filter(|&t| t > 1).max()
    }

    /// The real client's overhead per impl, one thread: (impl, ns over the
    /// plain-array key, that ns as a ratio of the plain row).
    fn client_overhead(&self) -> Vec<(&str, f64, f64)> {
        let name = super::ops::Op::Chacha1k.name();
        let Some(plain) = self.ns(name, super::client::PLAIN, 1) else {
            return Vec::new();
        };
        self.rows
            .iter()
            .filter(|r| r.name == name && r.threads == 1 && r.imp != super::client::PLAIN)
            .map(|r| (r.imp, r.ns_per_op - plain, r.ns_per_op / plain))
            .collect()
    }

    /// The JSON object (`--json`).
    pub fn json(&self) -> impl Serialize + '_ {
        Json {
            floor_ns: self.floor_ns,
            rows: &self.rows,
            targets: self.targets(),
            capacity_32b: self.pooled.held,
            capacity_sealed_32b: self.sealed.held,
            client_overhead_ns: self
                .client_overhead()
                .into_iter()
                .map(|(imp, ns, _)| (imp, ns))
                .collect(),
            pooled_vs_page_new_close: self.pooled_vs_page("pooled"),
            pooled_pkey_vs_page_new_close: self.pooled_vs_page("pooled-pkey"),
        }
    }
}

/// The table for people.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        writeln!(
            f,
            "securememory bench ({} run, {:.0} s): {} CPUs, Linux {}",
            h.plan,
            h.elapsed.as_secs_f64(),
            h.cores,
            h.kernel
        )?;
        writeln!(
            f,
            "memlock limit: soft {}, hard {}; this process has CAP_IPC_LOCK: {} (the capacity child drops it)",
            Bytes(h.memlock_soft),
            Bytes(h.memlock_hard),
            if h.cap_ipc_lock { "yes" } else { "no" }
        )?;
        writeln!(
            f,
            "floor: mprotect(PROT_READ) + read 32 B + mprotect(PROT_NONE), one locked page, one thread: \
             {:.0} ns (median of {} samples through the run, {:.0}-{:.0})",
            self.floor_ns,
            h.floor.len(),
            h.floor.min(),
            h.floor.max()
        )?;
        writeln!(
            f,
            "ns/op of the parallel rows: wall time over all threads' operations"
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<20} {:<17} {:>7}  {:<6} {:>10} {:>9}",
            "name", "impl", "threads", "path", "ns/op", "x floor"
        )?;
        let mut last_imp = "";
        for r in &self.rows {
            if r.imp != last_imp && !last_imp.is_empty() {
                writeln!(f)?;
            }
            last_imp = r.imp;
            writeln!(
                f,
                "{:<20} {:<17} {:>7}  {:<6} {:>10.1} {:>9.2}",
                r.name, r.imp, r.threads, r.path, r.ns_per_op, r.ratio_to_floor
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "capacity, 32-byte secrets held at once by a process without CAP_IPC_LOCK (memlock soft {}), \
             each read back through with_bytes:",
            Bytes(self.pooled.memlock_soft)
        )?;
        for c in [&self.pooled, &self.page, &self.sealed] {
            write!(
                f,
                "  {:<7} {:>8}  ({} checked not readable at rest; {:.1} s)",
                c.layout.arg(),
                c.held,
                c.checked_at_rest,
                c.seconds,
            )?;
            match c.stopped_by.as_deref() {
                None => writeln!(f, " reached the cap")?,
                Some(e) => writeln!(f, " stopped by: {}", first_sentence(e))?,
            }
        }
        writeln!(
            f,
            "  (sealed: capacity_sealed_32b, under a soft memlock limit of {} the child set itself, counted up to {})",
            Bytes(self.sealed.memlock_soft),
            self.sealed.max
        )?;
        writeln!(
            f,
            "  (Asherah Go, one page per secret: 2048 under an 8 MiB limit)"
        )?;
        let client = self.client_overhead();
        if !client.is_empty() {
            writeln!(
                f,
                "real client, one thread: a 1 KiB ChaCha20-Poly1305 message keyed inside with_bytes, over the same keyed from a plain array ({:.0} ns):",
                self.ns(super::ops::Op::Chacha1k.name(), super::client::PLAIN, 1).unwrap_or(0.0)
            )?;
            for (imp, ns, ratio) in client {
                writeln!(f, "  {imp:<17} +{ns:>7.0} ns per message ({ratio:.2}x)")?;
            }
        }
        for pool in ["pooled", "pooled-pkey"] {
            if let Some(ratio) = self.pooled_vs_page(pool) {
                writeln!(
                    f,
                    "new_close, one page (protected) / {pool}, one thread: {ratio:.1}x"
                )?;
            }
        }
        self.write_targets(f)?;
        for n in &self.notes {
            writeln!(f, "NOTE: {n}")?;
        }
        Ok(())
    }
}
