//! The module graph of `src/` has no cycles, and the layering the architecture
//! (docs/architecture.md) promises holds: nothing below `config` imports the whole
//! configuration, `config` imports no sink internals.
//!
//! The graph is read from the source text: a node per module file (`mod.rs` is its
//! directory's module), an edge for every `crate::…`, `super::…` or `self::…` path in
//! code (use trees expanded; comments left out), to the deepest module the path names.
//! A parent's `mod child;` declaration is not an edge; a child's `use super::…` is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

/// Every module file under `src/` (the binary's `main.rs` left out: it is a crate of
/// its own), with its text less comments.
fn modules() -> BTreeMap<Module, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Module, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if path.is_dir() {
                let mut p = prefix.to_vec();
                p.push(name);
                walk(&path, &p, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut m = prefix.to_vec();
                match stem {
                    "mod" | "lib" => {}
                    "main" if prefix.is_empty() => continue,
                    _ => m.push(stem.to_owned()),
                }
                let text = std::fs::read_to_string(&path).unwrap();
                out.insert(m, strip_comments(&text));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &[],
        &mut out,
    );
    out
}

/// The text with comments removed (doc links are not dependencies) and the contents
/// of string and character literals blanked, so that braces and `::` are code's own.
fn strip_comments(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        match c[i] {
            '/' if next == Some('/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            'r' if (next == Some('"') || next == Some('#'))
                && !c[..i]
                    .last()
                    .is_some_and(|p| p.is_alphanumeric() || *p == '_') =>
            {
                // A raw string: r"…", r#"…"#, …
                let mut j = i + 1;
                let mut hashes = 0;
                while c.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if c.get(j) != Some(&'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= c.len() {
                        break;
                    }
                    if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            '"' => {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                out.push_str("\"\"");
                i += 1;
            }
            '\'' => {
                // A character literal ('x', '\n', '\u{..}'), or a lifetime ('a).
                let close = if next == Some('\\') {
                    (i + 2..c.len().min(i + 12)).find(|&j| c[j] == '\'')
                } else if c.get(i + 2) == Some(&'\'') {
                    Some(i + 2)
                } else {
                    None
                };
                match close {
                    Some(j) => {
                        out.push_str("' '");
                        i = j + 1;
                    }
                    None => {
                        out.push('\'');
                        i += 1;
                    }
                }
            }
            ch => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

/// For each byte of cleaned text, the inline modules (`mod name { … }`) around it.
fn inline_modules(text: &str) -> Vec<(usize, usize, String)> {
    let b = text.as_bytes();
    let mut open: Vec<(Option<String>, usize)> = Vec::new();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' => {
                // `mod name {` just before?
                let before = text[..i].trim_end();
                let word_start = before
                    .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .map_or(0, |k| k + 1);
                let name = &before[word_start..];
                let kw = before[..word_start].trim_end();
                let is_mod = kw.ends_with("mod")
                    && !kw[..kw.len() - 3]
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_');
                open.push((is_mod.then(|| name.to_owned()), i));
            }
            b'}' => {
                if let Some((Some(name), start)) = open.pop() {
                    spans.push((start, i, name));
                }
            }
            _ => {}
        }
        i += 1;
    }
    spans
}

/// The inline module path at byte `at`.
fn enclosing(spans: &[(usize, usize, String)], at: usize) -> Vec<String> {
    let mut inside: Vec<&(usize, usize, String)> = spans
        .iter()
        .filter(|(s, e, _)| *s < at && at < *e)
        .collect();
    inside.sort_by_key(|(s, _, _)| *s);
    inside.into_iter().map(|(_, _, n)| n.clone()).collect()
}

/// The paths a `use` tree names: `a::{b, c::{d, self}}` → `a::b`, `a::c::d`, `a::c`.
fn expand(tree: &str) -> Vec<String> {
    // One space between words (so `x as y` stays readable), none around punctuation.
    let mut tree = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    for p in ["::", "{", "}", ","] {
        tree = tree
            .replace(&format!(" {p}"), p)
            .replace(&format!("{p} "), p);
    }
    let mut out = Vec::new();
    fn go(prefix: &str, tree: &str, out: &mut Vec<String>) {
        match tree.find('{') {
            None => {
                let t = tree.split(" as ").next().unwrap_or(tree);
                let full = match (prefix.is_empty(), t) {
                    (_, "self") => prefix.to_owned(),
                    (true, _) => t.to_owned(),
                    (false, _) => format!("{prefix}::{t}"),
                };
                out.push(full);
            }
            Some(open) => {
                let head = tree[..open].trim_end_matches("::");
                let prefix = match (prefix.is_empty(), head.is_empty()) {
                    (true, _) => head.to_owned(),
                    (false, true) => prefix.to_owned(),
                    (false, false) => format!("{prefix}::{head}"),
                };
                let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
                // Split at top-level commas.
                let (mut depth, mut start) = (0, 0);
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            go(&prefix, &inner[start..i], out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                if start < inner.len() {
                    go(&prefix, &inner[start..], out);
                }
            }
        }
    }
    go("", &tree, &mut out);
    out
}

/// Every crate-relative path a module's code names, made absolute.
fn paths(module: &Module, text: &str) -> Vec<Module> {
    let spans = inline_modules(text);
    let mut raw: Vec<(usize, String)> = Vec::new();
    // `use` trees (they may span lines and nest braces).
    let mut from = 0;
    while let Some(i) = text[from..].find("use ") {
        let at = from + i;
        let before = text[..at].chars().last();
        let after = &text[at + 4..];
        from = at + 4;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = after.find(';') else { break };
        let tree = &after[..end];
        if tree.starts_with("crate::") || tree.starts_with("super::") || tree.starts_with("self::")
        {
            raw.extend(expand(tree).into_iter().map(|p| (at, p)));
        }
    }
    // Inline paths in code.
    let bytes = text.as_bytes();
    for anchor in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(anchor) {
            let at = from + i;
            from = at + anchor.len();
            if at > 0
                && (bytes[at - 1].is_ascii_alphanumeric()
                    || bytes[at - 1] == b'_'
                    || bytes[at - 1] == b':')
            {
                continue;
            }
            let end = text[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(text.len(), |e| at + e);
            raw.push((at, text[at..end].trim_end_matches(':').to_owned()));
        }
    }
    raw.into_iter()
        .filter_map(|(at, p)| {
            let mut here = module.clone();
            here.extend(enclosing(&spans, at));
            let mut segs = p.split("::");
            let mut abs: Module = match segs.next()? {
                "crate" => Vec::new(),
                "self" => here,
                "super" => here[..here.len().checked_sub(1)?].to_vec(),
                _ => return None,
            };
            for s in segs {
                match s {
                    "super" => {
                        abs.pop();
                    }
                    "self" | "" => {}
                    _ => abs.push(s.to_owned()),
                }
            }
            Some(abs)
        })
        .collect()
}

/// The module graph: module → the modules it uses (deepest module each path names).
fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let mods = modules();
    let mut g = BTreeMap::new();
    for (m, text) in &mods {
        let mut to = BTreeSet::new();
        for p in paths(m, text) {
            let target = (1..=p.len())
                .rev()
                .map(|n| p[..n].to_vec())
                .find(|prefix| mods.contains_key(prefix));
            if let Some(t) = target
                && t != *m
            {
                to.insert(t);
            }
        }
        g.insert(m.clone(), to);
    }
    g
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".to_owned()
    } else {
        m.join("::")
    }
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on: BTreeSet<&'a Module>,
        out: Vec<Vec<String>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a Module) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on.insert(v);
            for w in &self.g[v] {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on.remove(w);
                    comp.push(name(w));
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn the_module_graph_has_no_cycles() {
    let g = graph();
    assert!(g.len() > 40, "read only {} modules", g.len());
    let found = cycles(&g);
    let explain: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = g
                .iter()
                .filter(|(m, _)| c.contains(&name(m)))
                .flat_map(|(m, to)| {
                    to.iter()
                        .filter(|t| c.contains(&name(t)))
                        .map(move |t| format!("{} → {}", name(m), name(t)))
                })
                .collect();
            format!("{}: {}", c.join(", "), edges.join("; "))
        })
        .collect();
    assert!(found.is_empty(), "module cycles:\n{}", explain.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle() {
    // The checker itself: a two-module cycle and a three-module one are reported,
    // an acyclic graph is not.
    let m = |s: &str| -> Module { s.split("::").map(str::to_owned).collect() };
    let mut g: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, to) in [
        ("a", "b"),
        ("b", "a"),
        ("c", "d"),
        ("d", "e"),
        ("e", "c"),
        ("f", "a"),
    ] {
        g.entry(m(from)).or_default().insert(m(to));
        g.entry(m(to)).or_default();
    }
    assert_eq!(
        cycles(&g),
        vec![
            vec!["a".to_owned(), "b".to_owned()],
            vec!["c".to_owned(), "d".to_owned(), "e".to_owned()]
        ]
    );
    let text = "use super::{util::{self, at}, Reason};\nfn f() { crate::window::Engine::new(); }";
    let found = paths(&m("decode::native"), text);
    for want in [
        "decode::util",
        "decode::util::at",
        "decode::Reason",
        "window::Engine::new",
    ] {
        assert!(found.contains(&m(want)), "{want} not in {found:?}");
    }
}

#[test]
fn nothing_below_config_imports_the_configuration() {
    // Only the application, the command line and reload (which re-reads the file)
    // hold the whole configuration; every component gets its own settings.
    let allowed = ["app", "cli", "config", "reload", "quickstart", "topics"];
    let g = graph();
    let config = vec!["config".to_owned()];
    let mut offenders: Vec<String> = g
        .iter()
        .filter(|(m, to)| {
            to.contains(&config) && !m.first().is_some_and(|f| allowed.contains(&f.as_str()))
        })
        .map(|(m, _)| name(m))
        .collect();
    offenders.sort();
    assert!(
        offenders.is_empty(),
        "modules below config import it: {offenders:?}"
    );
    let sinks: Vec<String> = g[&config]
        .iter()
        .filter(|t| t.first().is_some_and(|f| f == "sink"))
        .map(name)
        .collect();
    assert!(
        sinks.iter().all(|s| s == "sink"),
        "config imports sink internals (only the sink module's settings enum): {sinks:?}"
    );
}
