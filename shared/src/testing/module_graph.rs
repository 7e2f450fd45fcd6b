//! Which source file of a crate uses which, read from its `crate::`, `super::` and `self::`
//! paths (in `use` trees and inline), so tests can prove that modules do not depend on each
//! other in a circle and that layers point down. Test modules at the end of a file (from a
//! `#[cfg(test)]` line on) and comments are not read: tests may reach anywhere.
//!
//! A path is resolved to the deepest file it names (`crate::grants::tokens::X` is
//! `grants/tokens.rs`, `crate::http::ApiError` is `http.rs`); a path naming an item of the
//! crate root (`crate::resource_url`) is `lib.rs`. Relative paths without `crate`, `super` or
//! `self` (a parent naming its own child module) are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files (relative to the crate's `src`, `/`-separated) and the files each uses.
#[derive(Debug, Default)]
pub struct ModuleGraph {
    pub uses: BTreeMap<String, BTreeSet<String>>,
}

impl ModuleGraph {
    /// Reads every `.rs` file under `src`.
    pub fn read(src: &Path) -> std::io::Result<Self> {
        let mut files = Vec::new();
        collect(src, &mut files)?;
        let mut graph = Self::default();
        for file in files {
            let rel = relative(src, &file);
            let text = std::fs::read_to_string(&file)?;
            let targets = paths_in(&text)
                .into_iter()
                .filter_map(|p| resolve(src, &module_path(&rel), &p))
                .filter(|t| *t != rel)
                .collect();
            graph.uses.insert(rel, targets);
        }
        Ok(graph)
    }

    /// Builds a graph from `(file, source)` pairs whose files all exist in `files`: for tests
    /// of the checks themselves.
    pub fn from_sources(sources: &[(&str, &str)]) -> Self {
        let known: BTreeSet<String> = sources.iter().map(|(f, _)| f.to_string()).collect();
        let mut graph = Self::default();
        for (file, text) in sources {
            let targets = paths_in(text)
                .into_iter()
                .filter_map(|p| resolve_in(&known, &module_path(file), &p))
                .filter(|t| t != file)
                .collect();
            graph.uses.insert(file.to_string(), targets);
        }
        graph
    }

    /// Every file reachable from `from` (not counting `from` itself unless on a cycle).
    pub fn reachable(&self, from: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = self
            .uses
            .get(from)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        while let Some(f) = todo.pop() {
            if seen.insert(f.to_owned()) {
                todo.extend(self.uses.get(f).into_iter().flatten().map(String::as_str));
            }
        }
        seen
    }

    /// A path of uses from `from` to `to`, if there is one (for error messages).
    pub fn path(&self, from: &str, to: &str) -> Option<Vec<String>> {
        let mut parent: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([from.to_owned()]);
        let mut seen = BTreeSet::from([from.to_owned()]);
        while let Some(f) = queue.pop_front() {
            for next in self.uses.get(&f).into_iter().flatten() {
                if next == to {
                    let mut path = vec![to.to_owned(), f.clone()];
                    let mut cur = f.clone();
                    while let Some(p) = parent.get(&cur) {
                        path.push(p.clone());
                        cur = p.clone();
                    }
                    path.reverse();
                    return Some(path);
                }
                if seen.insert(next.clone()) {
                    parent.insert(next.clone(), f.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        None
    }

    /// The cycles among `files`: each as the list of files on it (one per cycle found).
    pub fn cycles_among(&self, files: &BTreeSet<String>) -> Vec<Vec<String>> {
        let mut cycles = Vec::new();
        for f in files {
            if let Some(path) = self.path(f, f)
                && path.iter().all(|p| files.contains(p))
            {
                let mut members: Vec<String> = path[..path.len() - 1].to_vec();
                members.sort();
                if !cycles.contains(&members) {
                    cycles.push(members);
                }
            }
        }
        cycles
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn relative(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap_or(file);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// The module path of a file: `grants/tokens.rs` is `[grants, tokens]`, `grants/mod.rs` and
/// `grants.rs` are `[grants]`, `lib.rs` is `[]`.
fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.split('/').map(str::to_owned).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The source without comments, string literals and trailing test modules.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") || t.starts_with("#[cfg(all(test") {
            break;
        }
        let mut in_str = false;
        let mut escaped = false;
        let mut prev = '\0';
        for c in line.chars() {
            if in_str {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_str = false;
                }
                continue;
            }
            if c == '/' && prev == '/' {
                out.pop();
                break;
            }
            if c == '"' {
                in_str = true;
                prev = c;
                continue;
            }
            out.push(c);
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// Every `crate::`/`super::`/`self::` path in `text`, `use` trees expanded.
fn paths_in(text: &str) -> Vec<Vec<String>> {
    let code = code_of(text);
    let mut paths = Vec::new();
    // `use` trees: `use crate::{a::b, c::{d, e}};`
    let mut rest = code.as_str();
    while let Some(i) = find_use(rest) {
        let after = &rest[i..];
        let end = after.find(';').unwrap_or(after.len());
        expand(&after[..end], &mut Vec::new(), &mut paths);
        rest = &after[end..];
    }
    // Inline paths: `crate::http::error_chain(&e)`.
    let bytes = code.as_bytes();
    for root in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(root) {
            let start = from + at;
            from = start + root.len();
            if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
                continue;
            }
            let path: Vec<String> = code[start..]
                .split("::")
                .map(|seg| {
                    seg.chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect::<String>()
                })
                .take_while(|seg| !seg.is_empty())
                .collect();
            // `crate::{...}` alone names no module: its `use` tree was expanded above.
            if path.len() > 1 {
                paths.push(path);
            }
        }
    }
    paths
}

/// The start of the next `use` tree (after the keyword) in `code`.
fn find_use(code: &str) -> Option<usize> {
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(at) = code[from..].find("use ") {
        let start = from + at;
        from = start + 4;
        let word_start =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if word_start {
            return Some(from);
        }
    }
    None
}

/// Expands one `use` tree into full paths, appended to `out`.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let close = tree.rfind('}').unwrap_or(tree.len());
        let inner = &tree[open + 1..close];
        let depth = prefix.len();
        prefix.extend(head);
        for item in split_top_level(inner) {
            expand(item, prefix, out);
        }
        prefix.truncate(depth);
        return;
    }
    let mut path = prefix.clone();
    let plain = tree.split(" as ").next().unwrap_or_default();
    path.extend(
        plain
            .split("::")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty() && s != "*"),
    );
    if path
        .first()
        .is_some_and(|s| s == "crate" || s == "super" || s == "self")
    {
        out.push(path);
    }
}

/// The comma-separated items of a brace group, nested groups kept whole.
fn split_top_level(inner: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

/// The module path `path` names, from a file whose module path is `here`.
fn absolute(here: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut segs = path.iter();
    let mut base: Vec<String> = match segs.next()?.as_str() {
        "crate" => Vec::new(),
        "self" => here.to_vec(),
        "super" => {
            let mut b = here.to_vec();
            b.pop()?;
            b
        }
        _ => return None,
    };
    let mut rest: Vec<String> = segs.cloned().collect();
    // `super::super::x`
    while rest.first().is_some_and(|s| s == "super") {
        base.pop()?;
        rest.remove(0);
    }
    base.extend(rest);
    Some(base)
}

/// The deepest existing file `path` names under `src`.
fn resolve(src: &Path, here: &[String], path: &[String]) -> Option<String> {
    let abs = absolute(here, path)?;
    let mut found = "lib.rs".to_owned();
    let mut dir = src.to_path_buf();
    for seg in &abs {
        let file = dir.join(format!("{seg}.rs"));
        let module = dir.join(seg).join("mod.rs");
        if module.is_file() {
            found = relative(src, &module);
        } else if file.is_file() {
            found = relative(src, &file);
        } else {
            break;
        }
        dir = dir.join(seg);
    }
    Some(found)
}

/// As [`resolve`], among `known` file names.
fn resolve_in(known: &BTreeSet<String>, here: &[String], path: &[String]) -> Option<String> {
    let abs = absolute(here, path)?;
    let mut found = "lib.rs".to_owned();
    let mut prefix = String::new();
    for seg in &abs {
        let file = format!("{prefix}{seg}.rs");
        let module = format!("{prefix}{seg}/mod.rs");
        if known.contains(&module) {
            found = module;
        } else if known.contains(&file) {
            found = file;
        } else {
            break;
        }
        prefix = format!("{prefix}{seg}/");
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> ModuleGraph {
        ModuleGraph::from_sources(&[
            ("lib.rs", "pub mod a; pub mod b; pub fn root() {}"),
            (
                "a/mod.rs",
                "pub mod x;\nuse crate::b::{self, Thing as T};\n// use crate::c;\nfn f() { let s = \"crate::c\"; }",
            ),
            ("a/x.rs", "use super::helper;\nfn g() { crate::c::go(); }"),
            ("b.rs", "use crate::{root, c::{deep, other}};"),
            (
                "c.rs",
                "fn h() {}\n#[cfg(test)]\nmod tests { use crate::a::x; }",
            ),
        ])
    }

    #[test]
    fn uses_are_read_from_trees_and_inline_paths_not_comments_strings_or_tests() {
        let g = graph();
        let of = |f: &str| g.uses[f].iter().cloned().collect::<Vec<_>>();
        assert_eq!(of("a/mod.rs"), ["b.rs"]);
        assert_eq!(of("a/x.rs"), ["a/mod.rs", "c.rs"]);
        assert_eq!(of("b.rs"), ["c.rs", "lib.rs"]);
        assert!(of("c.rs").is_empty(), "the test module is not read");
    }

    #[test]
    fn reachability_paths_and_cycles() {
        let g = graph();
        assert!(g.reachable("a/x.rs").contains("b.rs"), "through a/mod.rs");
        assert!(!g.reachable("c.rs").contains("a/x.rs"));
        assert_eq!(
            g.path("a/x.rs", "c.rs").unwrap(),
            ["a/x.rs", "c.rs"],
            "the shortest path"
        );
        let all: BTreeSet<String> = g.uses.keys().cloned().collect();
        assert!(g.cycles_among(&all).is_empty());
        let cyclic = ModuleGraph::from_sources(&[
            ("lib.rs", ""),
            ("p.rs", "use crate::q::X;"),
            ("q.rs", "fn f() { crate::p::y(); }"),
        ]);
        let all: BTreeSet<String> = cyclic.uses.keys().cloned().collect();
        assert_eq!(cyclic.cycles_among(&all), [["p.rs", "q.rs"]]);
    }
}
