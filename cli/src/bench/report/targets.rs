//! The issues' figures checked against one run: each target with what this
//! run measured and whether it was met, printed under the table and listed
//! in the JSON object.

use std::fmt;

use serde::Serialize;

use super::Report;

/// One ratio target checked against this run's rows.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is compared, in words.
    pub what: String,
    /// The figure this run measured (`null` where a row was not run).
    pub value: Option<f64>,
    /// The target: `value` must be at most this.
    pub at_most: f64,
    pub met: Option<bool>,
}

impl Target {
    fn new(what: String, value: Option<f64>, at_most: f64) -> Target {
        Target {
            what,
            value,
            at_most,
            met: value.map(|v| v <= at_most),
        }
    }
}

/// One target of issue 12 for `new_close`, as this run found it.
struct NewCloseTarget {
    imp: &'static str,
    what: String,
    met: bool,
}

impl Report {
    /// Every ratio target (issue 12's access targets, then issue 13's
    /// sealed ones), for the JSON object.
    pub(super) fn targets(&self) -> Vec<Target> {
        let mut v = self.access_targets();
        v.extend(self.sealed_targets());
        v
    }

    /// Issue 12's access targets against this run: the window path with
    /// every core on one secret at most 0.30x the floor (item 1), and the
    /// copy path and keyed pool on every core at most 0.6x their one-thread
    /// row (item 3: reads scale with cores).
    fn access_targets(&self) -> Vec<Target> {
        let n = self.parallel();
        let mut v = Vec::new();
        for imp in ["anonymous-window", "memfd_secret"] {
            let value = n
                .and_then(|n| self.ns("with_bytes", imp, n))
                .map(|ns| ns / self.floor_ns);
            v.push(Target::new(
                format!("with_bytes {imp}, {} threads, x floor", n.unwrap_or(2)),
                value,
                0.30,
            ));
        }
        for imp in ["protected", "pooled-pkey"] {
            let value = n.and_then(|n| {
                Some(self.ns("with_bytes", imp, n)? / self.ns("with_bytes", imp, 1)?)
            });
            v.push(Target::new(
                format!("with_bytes {imp}, {} threads / 1 thread", n.unwrap_or(2)),
                value,
                0.6,
            ));
        }
        v
    }

    /// Issue 13's sealed figures, one thread, ratios to the floor:
    /// `with_bytes` at most 0.35x (0.1x with the key behind a protection
    /// key), `new_close` at most 0.6x.
    fn sealed_targets(&self) -> Vec<Target> {
        let x_floor = |name: &str, imp: &str| self.ns(name, imp, 1).map(|ns| ns / self.floor_ns);
        vec![
            Target::new(
                "with_bytes sealed, 1 thread, x floor".into(),
                x_floor("with_bytes", "sealed"),
                0.35,
            ),
            Target::new(
                "with_bytes sealed-pkey, 1 thread, x floor".into(),
                x_floor("with_bytes", "sealed-pkey"),
                0.10,
            ),
            Target::new(
                "new_close sealed, 1 thread, x floor".into(),
                x_floor("new_close", "sealed"),
                0.6,
            ),
        ]
    }

    /// The targets of issue 12 for `new_close` (one-page secrets made from
    /// the store of ready pages), each with what this run measured: the
    /// one-thread ratio to the floor against its cap, and the two-thread
    /// ns/op against the one-thread ns/op (no worse). Rows not run are left out.
    fn new_close_targets(&self) -> Vec<NewCloseTarget> {
        let mut out = Vec::new();
        for (imp, cap) in [("protected", 1.5), ("guarded", 1.5), ("memfd_secret", 3.0)] {
            let Some(one) = self.ns("new_close", imp, 1) else {
                continue;
            };
            let ratio = one / self.floor_ns;
            out.push(NewCloseTarget {
                imp,
                what: format!("1 thread {ratio:.2}x floor (target <= {cap}x)"),
                met: ratio <= cap,
            });
            if let Some(two) = self.ns("new_close", imp, 2) {
                out.push(NewCloseTarget {
                    imp,
                    what: format!(
                        "2 threads {two:.0} ns/op vs 1 thread {one:.0} ns/op (target: no worse)"
                    ),
                    met: two <= one,
                });
            }
        }
        out
    }

    /// The target lines under the table.
    pub(super) fn write_targets(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ratio_lines = |f: &mut fmt::Formatter<'_>, targets: Vec<Target>| -> fmt::Result {
            for t in targets {
                match (t.value, t.met) {
                    (Some(v), Some(met)) => writeln!(
                        f,
                        "  {:<48} {v:>5.2} (at most {:.2}): {}",
                        t.what,
                        t.at_most,
                        if met { "met" } else { "MISSED" }
                    )?,
                    _ => writeln!(f, "  {:<48}  not run here", t.what)?,
                }
            }
            Ok(())
        };
        writeln!(f, "issue 12 targets (ns/op ratios of this run):")?;
        ratio_lines(f, self.access_targets())?;
        for t in self.new_close_targets() {
            writeln!(
                f,
                "target new_close {}: {}: {}",
                t.imp,
                t.what,
                if t.met { "met" } else { "MISSED" }
            )?;
        }
        writeln!(f, "issue 13 targets (sealed, ns/op ratios of this run):")?;
        ratio_lines(f, self.sealed_targets())
    }
}
