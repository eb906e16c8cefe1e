//! Guarantee (of the code's shape, not of its behaviour): every import in
//! `src/` points down the layers of ARCHITECTURE.md, and no two modules
//! import each other, directly or round a loop.
//!
//! The test reads every `.rs` file under `src/`, collects the `crate::...`
//! and `super::...` paths it names (in `use` lines and inline), and checks
//! each against the layer table below. A new file fails here until it is
//! given a layer; an import that climbs or closes a loop fails with the
//! file, the path and both layers.
//!
//! Not read: comments, string literals, and items under `#[cfg(test)]`,
//! `#[cfg(loom)]`, `#[cfg(all(test, ...))]` or `#[cfg(doctest)]` (a unit
//! test may reach anywhere in its own file's module). Skipped file:
//! `access_loom.rs`, the loom model of the gate, compiled only under
//! `cfg(all(test, loom))`: a test, not part of the crate as built.
//!
//! Control: run against the code before the re-cut of issue 10 (commit
//! 4a450e0, `fork`/`budget`/`limits`/`memfile` at the root), it fails: the
//! four had no layer, `options` imported `backend`, `pool_protection` and
//! `mem::pkey`, `access` and `secret` named the root's re-exports (a loop
//! through `lib.rs`), and `budget, fork, memfile, metrics` and `mem::once,
//! mem::sys` were import loops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files not read (see the module docs for why).
const SKIPPED: &[&str] = &["access_loom.rs"];

/// The layer of each top-level module, bottom (0) to top. `""` is the
/// crate root (`lib.rs`), which only declares modules and re-exports.
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("sync", 0),
    ("shield", 0),
    ("metrics", 0),
    ("hazard", 0),
    ("shard", 0),
    ("access", 0),
    ("options", 0),
    ("lock_point", 0),
    ("mem", 1),
    ("source", 2),
    ("pool", 2),
    ("pool_protection", 2),
    ("backend", 2),
    ("storage", 3),
    ("secret", 4),
    ("resolve", 4),
    ("factory", 4),
    ("system", 4),
    ("stats", 4),
    ("purge", 4),
    ("ready", 4),
    ("test_hooks", 4),
    ("", 4),
];

/// The order inside `mem/` (layer 1), bottom (0) to top: each of its
/// modules (a file, or a folder such as `sys/` or `region/` with all its
/// files) may import only modules of its rank or below. A module of `mem/`
/// not listed here is in layer 1 with no rank: only loops are checked for it.
/// `mem` itself (`mem/mod.rs`) declares the others, so it is on top.
const MEM_RANKS: &[(&str, u8)] = &[
    ("copy", 0),
    ("residue", 0),
    ("once", 0),
    ("inject", 0),
    ("release_once", 0),
    ("sys", 1),
    ("sentinel", 2),
    ("observe", 2),
    ("floor", 2),
    ("fork", 3),
    ("registry", 3),
    ("signal", 4),
    ("budget", 4),
    ("limits", 4),
    ("memfile", 5),
    ("probe", 5),
    ("stranded", 5),
    ("pkey", 6),
    ("arena", 6),
    ("region", 7),
    ("scratch", 8),
    ("", 9),
];

/// A module that layers are given to: a top-level module, or a module of
/// `mem/` (`"mem"` with `sub` its name, empty for `mem/mod.rs`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Unit {
    top: String,
    sub: String,
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.top.as_str(), self.sub.as_str()) {
            ("", _) => f.write_str("the crate root (lib.rs)"),
            (top, "") => f.write_str(top),
            (top, sub) => write!(f, "{top}::{sub}"),
        }
    }
}

/// Where a unit sits: its layer, and inside `mem/` its rank if listed.
#[derive(Clone, Copy, Debug)]
struct Place {
    layer: u8,
    rank: Option<u8>,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rank {
            Some(r) => write!(f, "layer {}, rank {r} inside mem", self.layer),
            None => write!(f, "layer {}", self.layer),
        }
    }
}

fn place(unit: &Unit) -> Option<Place> {
    let layer = LAYERS.iter().find(|(m, _)| *m == unit.top)?.1;
    let rank = (unit.top == "mem")
        .then(|| MEM_RANKS.iter().find(|(m, _)| *m == unit.sub).map(|r| r.1))
        .flatten();
    Some(Place { layer, rank })
}

/// Whether an import from `from` to `to` points up.
fn climbs(from: Place, to: Place) -> bool {
    match (from.rank, to.rank) {
        _ if to.layer != from.layer => to.layer > from.layer,
        (Some(a), Some(b)) => b > a,
        _ => false,
    }
}

/// The module path of a file under `src/` (`mem/sys/mod.rs` is `mem::sys`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !(stem == "mod" || (parts.is_empty() && stem == "lib")) {
        parts.push(stem.to_string());
    }
    parts
}

/// The unit an absolute module path (or item path) belongs to. `modules`
/// holds every module path that has a file.
fn unit_of(path: &[String], modules: &BTreeSet<Vec<String>>) -> Unit {
    let is_module = |n: usize| n <= path.len() && modules.contains(&path[..n].to_vec());
    let top = if is_module(1) {
        path[0].clone()
    } else {
        String::new()
    };
    let sub = if top == "mem" && is_module(2) {
        path[1].clone()
    } else {
        String::new()
    };
    Unit { top, sub }
}

// ---- reading the source --------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Punct(char),
}

/// Tokens of `src` with comments, string and char literals left out.
fn tokens(src: &str) -> Vec<Tok> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' || (c == 'r' && matches!(next, Some('"' | '#'))) {
            i = skip_string(&b, i);
        } else if c == '\'' {
            // A char literal ('x', '\n', '\''), else a lifetime ('a).
            if next == Some('\\') {
                i += 3;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(b[start..i].iter().collect()));
        } else if c == ':' && next == Some(':') {
            out.push(Tok::Path);
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(Tok::Punct(c));
            }
            i += 1;
        }
    }
    out
}

/// The index just past the string literal (plain, byte or raw) at `i`.
fn skip_string(b: &[char], mut i: usize) -> usize {
    if b[i] == 'r' {
        i += 1;
        let mut hashes = 0;
        while b.get(i) == Some(&'#') {
            hashes += 1;
            i += 1;
        }
        if b.get(i) != Some(&'"') {
            // `r#ident`: a raw identifier, not a string.
            return i;
        }
        i += 1;
        while i < b.len() {
            if b[i] == '"' && (1..=hashes).all(|k| b.get(i + k) == Some(&'#')) {
                return i + 1 + hashes;
            }
            i += 1;
        }
        return i;
    }
    i += 1;
    while i < b.len() {
        match b[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// Whether an attribute (its tokens inside `#[...]`) leaves its item out of
/// the crate as built: test-only, loom-only or doctest-only.
fn test_only(attr: &[Tok]) -> bool {
    let id = |k: usize| match attr.get(k) {
        Some(Tok::Ident(s)) => s.as_str(),
        _ => "",
    };
    id(0) == "cfg"
        && (matches!(id(2), "test" | "loom" | "doctest")
            || (id(2) == "all" && matches!(id(4), "test" | "loom")))
}

/// One import: the path as written and the absolute path it names.
struct Import {
    written: String,
    target: Vec<String>,
}

/// What file `src` (of module `module`) imports: `crate::` and `super::`
/// paths wherever they appear, `use` paths relative to the module (`use
/// sub::Item`, `self::`), and its `mod name;` declarations (a parent names
/// its children: `lib.rs` is above every module). `modules` holds every
/// module path that has a file, to tell a child module from a crate.
fn imports(src: &str, module: &[String], modules: &BTreeSet<Vec<String>>) -> Vec<Import> {
    let toks = tokens(src);
    let mut out = Vec::new();
    // Inline modules (`mod imp { ... }`): name and the brace depth inside.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let mut here: Vec<String> = module.to_vec();
        here.extend(inline.iter().map(|(n, _)| n.clone()));
        match &toks[i] {
            Tok::Punct('#') if toks.get(i + 1) == Some(&Tok::Punct('[')) => {
                let end = matching(&toks, i + 1);
                if test_only(&toks[i + 2..end]) {
                    i = item_end(&toks, end + 1);
                } else {
                    i = end + 1;
                }
                continue;
            }
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(m) if m == "mod" => match (toks.get(i + 1), toks.get(i + 2)) {
                (Some(Tok::Ident(name)), Some(Tok::Punct('{'))) => {
                    inline.push((name.clone(), depth + 1));
                }
                (Some(Tok::Ident(name)), Some(Tok::Punct(';'))) => {
                    let mut target = here.clone();
                    target.push(name.clone());
                    out.push(Import {
                        written: format!("mod {name}"),
                        target,
                    });
                }
                _ => {}
            },
            Tok::Ident(u) if u == "use" => {
                let (paths, next) = use_tree(&toks, i + 1);
                for written in paths {
                    if let Some(target) = absolute(&written, &here, modules) {
                        out.push(Import {
                            written: written.join("::"),
                            target,
                        });
                    }
                }
                i = next;
                continue;
            }
            Tok::Ident(root)
                if (root == "crate" || root == "super")
                    && toks.get(i + 1) == Some(&Tok::Path)
                    && !matches!(i.checked_sub(1).map(|k| &toks[k]), Some(Tok::Path)) =>
            {
                let (paths, next) = use_tree(&toks, i);
                for written in paths {
                    if let Some(target) = absolute(&written, &here, modules) {
                        out.push(Import {
                            written: written.join("::"),
                            target,
                        });
                    }
                }
                i = next;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The index of the bracket closing the one at `open`.
fn matching(toks: &[Tok], open: usize) -> usize {
    let mut depth = 0i32;
    for (k, t) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// The index just past the item starting at `i` (after its attributes):
/// its `;` at top level, or its closing brace.
fn item_end(toks: &[Tok], mut i: usize) -> usize {
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct(';') => return i + 1,
            Tok::Punct('#') if toks.get(i + 1) == Some(&Tok::Punct('[')) => {
                i = matching(toks, i + 1) + 1
            }
            Tok::Punct('(' | '[') => i = matching(toks, i) + 1,
            Tok::Punct('{') => return matching(toks, i) + 1,
            _ => i += 1,
        }
    }
    i
}

/// The paths of a use tree (or an inline path) starting at `i`: segments
/// joined by `::`, with `{a, b::c}` groups spread out. Returns them and the
/// index just past the tree.
fn use_tree(toks: &[Tok], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        match toks.get(i) {
            Some(Tok::Ident(s)) => {
                prefix.push(s.clone());
                i += 1;
            }
            Some(Tok::Punct('*')) => return (vec![prefix], i + 1),
            Some(Tok::Punct('{')) => {
                let end = matching(toks, i);
                let mut paths = Vec::new();
                let mut k = i + 1;
                while k < end {
                    let (sub, next) = use_tree(toks, k);
                    for s in sub {
                        let mut p = prefix.clone();
                        p.extend(s.into_iter().filter(|x| x != "self"));
                        paths.push(p);
                    }
                    k = next;
                    // Past `as name` and the comma.
                    while k < end && toks[k] != Tok::Punct(',') {
                        k += 1;
                    }
                    k += 1;
                }
                return (paths, end + 1);
            }
            _ => return (vec![prefix], i),
        }
        if toks.get(i) == Some(&Tok::Path) {
            i += 1;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// The absolute path that `written` names from module `here`: from the
/// root (`crate::`), from a parent (`super::`), from `here` (`self::`, or a
/// child module of `here`); `None` for anything else (another crate).
fn absolute(
    written: &[String],
    here: &[String],
    modules: &BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    let mut rest = written;
    let mut base: Vec<String> = match rest.first()?.as_str() {
        "crate" => {
            rest = &rest[1..];
            Vec::new()
        }
        "super" => here.to_vec(),
        "self" => {
            rest = &rest[1..];
            here.to_vec()
        }
        child => {
            let mut sub = here.to_vec();
            sub.push(child.to_string());
            if !modules.contains(&sub) {
                return None;
            }
            here.to_vec()
        }
    };
    while rest.first().map(String::as_str) == Some("super") {
        base.pop()?;
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

// ---- the check -----------------------------------------------------------

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// One arrow between two units, with where it was seen.
struct Arrow {
    file: String,
    written: String,
}

#[test]
fn every_import_points_down_and_no_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let files: Vec<(String, Vec<String>, String)> = files
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).expect("under src/");
            let text = std::fs::read_to_string(p).expect("a readable source file");
            (rel.display().to_string(), module_of(rel), text)
        })
        .filter(|(rel, _, _)| !SKIPPED.contains(&rel.as_str()))
        .collect();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.1.clone()).collect();

    let mut problems = Vec::new();
    let mut arrows: BTreeMap<(Unit, Unit), Vec<Arrow>> = BTreeMap::new();
    let mut count = 0;
    for (rel, module, text) in &files {
        let from = unit_of(module, &modules);
        let from_place = place(&from);
        if from_place.is_none() {
            problems.push(format!(
                "src/{rel}: module `{from}` has no layer; add it to LAYERS in tests/layers.rs \
                 (and to ARCHITECTURE.md)"
            ));
        }
        // Each climb once per file and pair of modules.
        let mut reported = BTreeSet::new();
        for import in imports(text, module, &modules) {
            count += 1;
            let to = unit_of(&import.target, &modules);
            if to == from {
                continue;
            }
            let to_place = place(&to);
            if reported.insert(to.clone()) {
                match (from_place, to_place) {
                    (Some(_), None) => problems.push(format!(
                        "src/{rel}: imports `{}` from `{to}`, which has no layer",
                        import.written
                    )),
                    (Some(f), Some(t)) if climbs(f, t) => problems.push(format!(
                        "src/{rel}: `{from}` ({f}) imports `{}` from `{to}` ({t}): \
                         an import that points up",
                        import.written
                    )),
                    _ => {}
                }
            }
            arrows.entry((from.clone(), to)).or_default().push(Arrow {
                file: rel.clone(),
                written: import.written,
            });
        }
    }
    // The parser found the imports the crate is made of (a parser that
    // found none would pass everything).
    assert!(
        count > 50,
        "only {count} imports found: the parser is broken"
    );
    assert!(
        arrows
            .keys()
            .any(|(a, b)| a.top == "storage" && b.top == "mem"),
        "storage's imports of mem were not found: the parser is broken"
    );

    for group in loops(arrows.keys()) {
        let names: Vec<String> = group.iter().map(ToString::to_string).collect();
        let mut text = format!(
            "import loop: {} reach each other; the arrows among them:",
            names.join(", ")
        );
        for ((a, b), seen) in &arrows {
            if group.contains(a) && group.contains(b) {
                text.push_str(&format!(
                    "\n    {a} -> {b}: src/{} imports `{}`",
                    seen[0].file, seen[0].written
                ));
            }
        }
        problems.push(text);
    }

    assert!(
        problems.is_empty(),
        "imports that break the layering (see ARCHITECTURE.md, \"Which way imports go\"):\n{}",
        problems.join("\n")
    );
}

/// The groups of two or more units that reach each other (each a loop).
fn loops<'a>(edges: impl Iterator<Item = &'a (Unit, Unit)>) -> Vec<BTreeSet<Unit>> {
    let mut next: BTreeMap<&Unit, Vec<&Unit>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a).or_default().push(b);
    }
    let reach = |from: &Unit| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(u) = todo.pop() {
            for &v in next.get(u).into_iter().flatten() {
                if seen.insert(v) {
                    todo.push(v);
                }
            }
        }
        seen
    };
    let mut done: BTreeSet<&Unit> = BTreeSet::new();
    let mut out = Vec::new();
    for &start in next.keys() {
        let from_start = reach(start);
        if done.contains(start) || !from_start.contains(start) {
            continue;
        }
        let group: BTreeSet<Unit> = from_start
            .iter()
            .filter(|&&u| reach(u).contains(start))
            .map(|&u| u.clone())
            .collect();
        done.extend(from_start.iter().filter(|&&u| group.contains(u)));
        out.push(group);
    }
    out
}

/// The parser on the forms the crate uses.
#[test]
fn parser_reads_use_trees_inline_paths_and_skips_tests() {
    let src = r#"
        //! crate::not_me in a doc comment
        use crate::{a, b::{c, self}, d::E as F};
        use super::sib::Thing;
        pub(crate) fn f() -> Result<(), crate::error::Error> {
            let _ = "crate::not_in_strings";
            crate::g::call();
            super::super::up::h()
        }
        mod imp {
            use super::Inner;
        }
        /* crate::block */
        #[cfg(test)]
        mod tests {
            use super::*;
            use crate::test_only;
        }
        #[cfg(feature = "test-hooks")]
        use crate::hooked;
        mod child;
        pub(crate) use child::Re;
        use std::io;
        use self::child::Other;
    "#;
    let module = vec!["mem".to_string(), "x".to_string()];
    let modules: BTreeSet<Vec<String>> = [vec![
        "mem".to_string(),
        "x".to_string(),
        "child".to_string(),
    ]]
    .into_iter()
    .collect();
    let got: Vec<String> = imports(src, &module, &modules)
        .into_iter()
        .map(|i| i.target.join("::"))
        .collect();
    assert_eq!(
        got,
        [
            "a",
            "b::c",
            "b",
            "d::E",
            "mem::sib::Thing",
            "error::Error",
            "g::call",
            "up::h",
            "mem::x::Inner",
            "hooked",
            "mem::x::child",
            "mem::x::child::Re",
            "mem::x::child::Other",
        ]
    );
}

/// Files in folders land in their module's unit: `mem/sys/*` and
/// `mem/region/*` (split into folders) keep the rank of `sys` and `region`;
/// `secret/reader.rs` is part of `secret`; a new file of `mem/` is in
/// layer 1 with no rank.
#[test]
fn folders_map_to_their_module() {
    let s = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    let files = [
        "mem/mod.rs",
        "mem/sys/mod.rs",
        "mem/sys/mapping.rs",
        "mem/region/mod.rs",
        "mem/region/backing.rs",
        "mem/newcomer.rs",
        "secret/mod.rs",
        "secret/reader.rs",
        "lib.rs",
    ];
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(Path::new(f))).collect();
    let unit = |f: &str| unit_of(&module_of(Path::new(f)), &modules);
    assert_eq!(unit("mem/sys/mapping.rs"), unit("mem/sys/mod.rs"));
    assert_eq!(unit("mem/region/backing.rs").sub, "region");
    assert_eq!(unit("secret/reader.rs").top, "secret");
    assert_eq!(unit("secret/reader.rs").sub, "");
    assert_eq!(unit("lib.rs").top, "");
    let sys = place(&unit("mem/sys/mapping.rs")).unwrap();
    let region = place(&unit("mem/region/backing.rs")).unwrap();
    assert!(climbs(sys, region) && !climbs(region, sys));
    let newcomer = place(&unit("mem/newcomer.rs")).unwrap();
    assert_eq!((newcomer.layer, newcomer.rank), (1, None));
    // An item of `mem/mod.rs` named from below is the top of `mem`.
    let item = unit_of(&s(&["mem", "Thing"]), &modules);
    assert_eq!(place(&item).unwrap().rank, Some(9));
    assert!(climbs(sys, place(&item).unwrap()));
}
