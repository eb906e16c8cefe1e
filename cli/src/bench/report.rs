//! The bench's output: the table for people and the JSON object for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use securememory::{AccessPath, Secret};
use serde::Serialize;

use super::capacity::Capacity;
use super::measure::{median, Plan};

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

impl Row {
    /// A row; its ratio is filled in once the floor is known.
    pub fn new(
        name: &'static str,
        imp: &'static str,
        threads: usize,
        secret: &Secret,
        ns_per_op: f64,
    ) -> Row {
        let path = match secret.access_path() {
            AccessPath::Copy => "copy",
            AccessPath::Window => "window",
            AccessPath::Auto => "auto",
        };
        Row {
            name,
            imp,
            threads,
            path,
            ns_per_op,
            ratio_to_floor: f64::NAN,
        }
    }
}

/// The facts printed above the table.
pub struct Header {
    plan: &'static str,
    cores: usize,
    kernel: String,
    memlock_soft: Option<u64>,
    memlock_hard: Option<u64>,
    cap_ipc_lock: bool,
    floor_ns: f64,
    floor_min: f64,
    floor_max: f64,
    floor_samples: usize,
    elapsed: Duration,
}

impl Header {
    pub fn collect(plan: &Plan, cores: usize, floor_samples: &[f64], elapsed: Duration) -> Header {
        let sys = securememory::system::report();
        let mut samples = floor_samples.to_vec();
        let floor_ns = median(&mut samples);
        Header {
            plan: plan.name,
            cores,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into()),
            memlock_soft: sys.memlock_soft,
            memlock_hard: sys.memlock_hard,
            cap_ipc_lock: sys.cap_ipc_lock,
            floor_ns,
            floor_min: samples.first().copied().unwrap_or(f64::NAN),
            floor_max: samples.last().copied().unwrap_or(f64::NAN),
            floor_samples: samples.len(),
            elapsed,
        }
    }
}

/// Everything the run found.
pub struct Report {
    header: Header,
    rows: Vec<Row>,
    pooled: Capacity,
    page: Capacity,
    notes: Vec<String>,
}

#[derive(Serialize)]
struct Json<'a> {
    floor_ns: f64,
    rows: &'a [Row],
    capacity_32b: u64,
    pooled_vs_page_new_close: f64,
    /// `null` where the machine has no protection keys.
    pooled_pkey_vs_page_new_close: f64,
}

fn limit(v: Option<u64>) -> String {
    match v {
        None => "unlimited".into(),
        Some(b) if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        Some(b) if b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        Some(b) => format!("{b} bytes"),
    }
}

/// The error up to its first full stop (the rest is advice on raising limits).
fn first_sentence(e: &str) -> &str {
    e.split_once(". ").map_or(e, |(first, _)| first)
}

impl Report {
    pub fn new(
        header: Header,
        mut rows: Vec<Row>,
        pooled: Capacity,
        page: Capacity,
        notes: Vec<String>,
    ) -> Report {
        for r in &mut rows {
            r.ratio_to_floor = r.ns_per_op / header.floor_ns;
        }
        Report {
            header,
            rows,
            pooled,
            page,
            notes,
        }
    }

    fn ns(&self, name: &str, imp: &str, threads: usize) -> f64 {
        self.rows
            .iter()
            .find(|r| r.name == name && r.imp == imp && r.threads == threads)
            .map_or(f64::NAN, |r| r.ns_per_op)
    }

    /// One-page new+close over the new+close of `pool` (an impl name), one thread.
    fn pooled_vs_page(&self, pool: &str) -> f64 {
        self.ns("new_close", "protected", 1) / self.ns("new_close", pool, 1)
    }

    /// The JSON object (`--json`).
    pub fn json(&self) -> impl Serialize + '_ {
        Json {
            floor_ns: self.header.floor_ns,
            rows: &self.rows,
            capacity_32b: self.pooled.held,
            pooled_vs_page_new_close: self.pooled_vs_page("pooled"),
            pooled_pkey_vs_page_new_close: self.pooled_vs_page("pooled-pkey"),
        }
    }

    /// The table for people.
    pub fn table(&self) -> String {
        let h = &self.header;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "securememory bench ({} run, {:.0} s): {} CPUs, Linux {}",
            h.plan,
            h.elapsed.as_secs_f64(),
            h.cores,
            h.kernel
        );
        let _ = writeln!(
            out,
            "memlock limit: soft {}, hard {}; this process has CAP_IPC_LOCK: {} (the capacity child drops it)",
            limit(h.memlock_soft),
            limit(h.memlock_hard),
            if h.cap_ipc_lock { "yes" } else { "no" }
        );
        let _ = writeln!(
            out,
            "floor: mprotect(PROT_READ) + read 32 B + mprotect(PROT_NONE), one locked page, one thread: \
             {:.0} ns (median of {} samples through the run, {:.0}-{:.0})",
            h.floor_ns, h.floor_samples, h.floor_min, h.floor_max
        );
        let _ = writeln!(
            out,
            "ns/op of the parallel rows: wall time over all threads' operations"
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<20} {:<17} {:>7}  {:<6} {:>10} {:>9}",
            "name", "impl", "threads", "path", "ns/op", "x floor"
        );
        let mut last_imp = "";
        for r in &self.rows {
            if r.imp != last_imp && !last_imp.is_empty() {
                let _ = writeln!(out);
            }
            last_imp = r.imp;
            let _ = writeln!(
                out,
                "{:<20} {:<17} {:>7}  {:<6} {:>10.1} {:>9.2}",
                r.name, r.imp, r.threads, r.path, r.ns_per_op, r.ratio_to_floor
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "capacity, 32-byte secrets held at once by a process without CAP_IPC_LOCK (memlock soft {}), \
             each read back through with_bytes:",
            limit(self.pooled.memlock_soft)
        );
        for c in [&self.pooled, &self.page] {
            let _ = writeln!(
                out,
                "  {:<7} {:>8}  ({} checked not readable at rest; {:.1} s){}",
                match c.layout {
                    super::capacity::CapLayout::Pooled => "pooled",
                    super::capacity::CapLayout::Page => "page",
                },
                c.held,
                c.checked_at_rest,
                c.seconds,
                c.stopped_by.as_deref().map_or_else(
                    || " reached the cap".to_string(),
                    |e| format!(" stopped by: {}", first_sentence(e))
                )
            );
        }
        let _ = writeln!(
            out,
            "  (Asherah Go, one page per secret: 2048 under an 8 MiB limit)"
        );
        for pool in ["pooled", "pooled-pkey"] {
            let ratio = self.pooled_vs_page(pool);
            if ratio.is_finite() {
                let _ = writeln!(
                    out,
                    "new_close, one page (protected) / {pool}, one thread: {ratio:.1}x"
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "NOTE: {n}");
        }
        out
    }
}
