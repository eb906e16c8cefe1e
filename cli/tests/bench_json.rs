//! `securememory bench --quick --json` prints exactly one JSON object of the
//! documented shape on stdout: every row of every implementation in both
//! thread forms, each with a path and a positive, finite ns/op and ratio,
//! plus the capacity and the pooled-vs-page figures. The quick run takes
//! about 20 s; no timing is asserted, only shape and sanity.
#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

const NAMES: [&str; 9] = [
    "with_bytes",
    "with_bytes_func",
    "reader_read_all",
    "reader_read_full",
    "reader_read",
    "reader_read_4b",
    "new_close",
    "create_random_close",
    "chacha20poly1305_1k",
];

fn positive_finite(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(
        x.is_finite() && x > 0.0,
        "{what} is not a positive finite number: {x}"
    );
    x
}

#[test]
fn bench_quick_json_has_the_documented_shape() {
    let out = Command::new(env!("CARGO_BIN_EXE_securememory"))
        .args(["bench", "--quick", "--json"])
        .output()
        .expect("run securememory bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    // The whole of stdout is one JSON value: nothing printed beside it.
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{stdout}"));
    let obj = v.as_object().expect("a JSON object");
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "floor_ns",
            "rows",
            "targets",
            "capacity_32b",
            "capacity_sealed_32b",
            "client_overhead_ns",
            "pooled_vs_page_new_close",
            "pooled_pkey_vs_page_new_close"
        ])
    );
    positive_finite(&v["floor_ns"], "floor_ns");
    let targets = v["targets"].as_array().expect("targets is an array");
    assert_eq!(
        targets.len(),
        7,
        "two window targets, two scaling targets, three sealed targets"
    );
    // The sealed ones run on every machine but the protection-key one.
    let sealed_run = targets
        .iter()
        .filter(|t| t["what"].as_str().is_some_and(|w| w.contains("sealed")))
        .filter(|t| t["value"].is_f64())
        .count();
    assert!(sealed_run >= 2, "the sealed targets were not measured");
    for t in targets {
        assert!(t["what"].is_string(), "{t}");
        positive_finite(&t["at_most"], "at_most");
        // Where the row ran, the verdict is the comparison itself.
        if let Some(value) = t["value"].as_f64() {
            let met = t["met"].as_bool().expect("met is a bool where value is");
            assert_eq!(met, value <= t["at_most"].as_f64().unwrap(), "{t}");
        } else {
            assert!(t["met"].is_null(), "{t}");
        }
    }
    positive_finite(&v["pooled_vs_page_new_close"], "pooled_vs_page_new_close");
    let keys_ok = securememory::protection_keys_status().is_ok();
    if keys_ok {
        positive_finite(
            &v["pooled_pkey_vs_page_new_close"],
            "pooled_pkey_vs_page_new_close",
        );
    } else {
        eprintln!("SKIPPED: pooled-pkey rows: this machine has no protection keys");
        assert!(v["pooled_pkey_vs_page_new_close"].is_null());
        assert!(stderr.contains("pooled-pkey rows SKIPPED"), "{stderr}");
    }
    assert!(
        v["capacity_32b"]
            .as_u64()
            .expect("capacity_32b is an integer")
            > 0
    );

    // The quick run counts sealed secrets to 200,000 (the full run to a million).
    assert_eq!(v["capacity_sealed_32b"].as_u64(), Some(200_000));
    let overhead = v["client_overhead_ns"].as_array().expect("an array");
    for imp in ["protected", "pooled", "sealed"] {
        assert!(
            overhead.iter().any(|o| o[0] == imp && o[1].is_f64()),
            "no real-client overhead for {imp}: {overhead:?}"
        );
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let mut impls = vec![
        "protected",
        "guarded",
        "pooled",
        "anonymous-window",
        "sealed",
    ];
    if keys_ok {
        impls.push("pooled-pkey");
        impls.push("sealed-pkey");
    }
    if securememory_memfd_secret_ok(&stderr) {
        impls.push("memfd_secret");
    }
    let rows = v["rows"].as_array().expect("rows is an array");
    let mut seen = BTreeSet::new();
    for r in rows {
        let name = r["name"].as_str().expect("name");
        let imp = r["impl"].as_str().expect("impl");
        let threads = r["threads"].as_u64().expect("threads");
        if imp == "plain-array" {
            // The real client's baseline: the cipher keyed from a plain array.
            assert_eq!(name, "chacha20poly1305_1k");
            assert_eq!(r["path"], "-");
            assert!(
                seen.insert((name, imp, threads)),
                "duplicate {name}/{imp}/{threads}"
            );
            continue;
        }
        assert!(NAMES.contains(&name), "unknown row name {name}");
        assert!(impls.contains(&imp), "unknown impl {imp}");
        assert!(threads == 1 || threads == cores, "threads {threads}");
        let path = r["path"].as_str().expect("path");
        assert!(path == "copy" || path == "window", "path {path}");
        positive_finite(&r["ns_per_op"], "ns_per_op");
        positive_finite(&r["ratio_to_floor"], "ratio_to_floor");
        assert!(
            seen.insert((name, imp, threads)),
            "duplicate row {name}/{imp}/{threads}"
        );
    }
    let forms = if cores > 1 { 2 } else { 1 };
    assert_eq!(
        seen.len(),
        (NAMES.len() * impls.len() + 1) * forms,
        "rows: {seen:?}"
    );
}

/// The bench skips memfd_secret rows (with a loud note on stderr) when the
/// kernel lacks it.
fn securememory_memfd_secret_ok(stderr: &str) -> bool {
    !stderr.contains("memfd_secret rows SKIPPED")
}
