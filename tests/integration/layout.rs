//! The house in order (issue 20): no circle of imports between the library's source files, and no file of more
//! than [`MAX_CODE_LINES`] lines of non-test code.
//!
//! Every `src/**/*.rs` file but the binaries is a module; an edge A -> B means A's code names something of B
//! through a `use` (`crate::`, `super::`, `self::` trees, groups included; a `pub use` re-export too) or an
//! inline path (`crate::b::f()`). Declaring a child module (`mod b;`) is not an edge, and neither are comments,
//! doc links or the file's `#[cfg(test)]` module. A cycle among those edges fails the test with every file on it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// At most this many lines of code (not blank, not comments, outside `#[cfg(test)]`) per file.
const MAX_CODE_LINES: usize = 600;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `a/b.rs` and `a/b/mod.rs` -> `["a", "b"]`; `lib.rs` -> `[]`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

fn library_files() -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut pending = vec![src()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(src()).unwrap().to_path_buf();
            if path.is_dir() {
                if relative != Path::new("bin") {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.insert(module_of(&relative), path);
            }
        }
    }
    out
}

/// The code of a file: comments (line and block), string and char literals blanked, the test module cut off.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            i += end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
            out.extend(rest[..end].chars().filter(|c| *c == '\n'));
            i += end;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|c| *c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            let end = rest[body..]
                .find(&close)
                .map_or(rest.len(), |e| body + e + close.len());
            out.extend(rest[..end].chars().filter(|c| *c == '\n'));
            out.push_str("\"\"");
            i += end;
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < rest.len() {
                match rest.as_bytes()[j] {
                    b'\\' => j += 2,
                    b'"' => break,
                    _ => j += 1,
                }
            }
            let end = (j + 1).min(rest.len());
            out.extend(rest[..end].chars().filter(|c| *c == '\n'));
            out.push_str("\"\"");
            i += end;
        } else if rest.starts_with("'\\''") || rest.starts_with("'\"'") {
            out.push_str("' '");
            i += rest
                .find('\'')
                .map_or(1, |_| if rest.starts_with("'\\''") { 4 } else { 3 });
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Every path a piece of code names: `use` trees expanded, plus inline `crate::…`/`super::…`/`self::…` paths.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    // use trees: `use a::{b, c::{d, e}};`
    let mut rest = code;
    while let Some(at) = find_word(rest, "use") {
        let after = &rest[at + 3..];
        let end = after.find(';').unwrap_or(after.len());
        expand_tree(after[..end].trim(), &mut Vec::new(), &mut paths);
        rest = &after[end..];
    }
    // inline paths
    for root in ["crate::", "super::", "self::"] {
        let mut rest = code;
        while let Some(at) = rest.find(root) {
            let before = rest[..at].chars().last();
            let path: String = rest[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            // `super::{…}` is a use tree's head, expanded above; alone it would name the parent.
            let tree_head = rest[at + root.len()..].starts_with('{');
            if !tree_head && !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                paths.push(
                    path.split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                );
            }
            rest = &rest[at + root.len()..];
        }
    }
    paths
}

/// The modules a file declares: `mod x;` / `pub mod x;` / `pub(crate) mod x;`.
fn declared_children(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub ")
                .or(line.strip_prefix("pub(crate) "))
                .unwrap_or(line);
            rest.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(|name| name.trim().to_owned())
        })
        .collect()
}

/// Inline paths that start with `first::` (not preceded by another path segment).
fn relative_paths(code: &str, first: &str) -> Vec<Vec<String>> {
    let needle = format!("{first}::");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(&needle) {
        let before = rest[..at].chars().last();
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            let path: String = rest[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(
                path.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
        rest = &rest[at + needle.len()..];
    }
    out
}

fn find_word(text: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = text[from..].find(word) {
        let at = from + at;
        let before = text[..at].chars().last();
        let after = text[at + word.len()..].chars().next();
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && after.is_some_and(char::is_whitespace)
        {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

fn expand_tree(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let close = tree.rfind('}').unwrap_or(tree.len());
        let inner = &tree[open + 1..close];
        let depth = prefix.len();
        prefix.extend(head);
        let mut level = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => level += 1,
                '}' => level -= 1,
                ',' if level == 0 => {
                    expand_tree(&inner[start..i], prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_tree(&inner[start..], prefix, out);
        prefix.truncate(depth);
    } else if !tree.is_empty() {
        let leaf = tree.split(" as ").next().unwrap_or(tree);
        let mut path = prefix.clone();
        path.extend(
            leaf.split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "self")
                .map(str::to_owned),
        );
        out.push(path);
    }
}

/// The module a path names (the longest prefix that is a module file), from the file of module `from`.
fn resolve(
    path: &[String],
    from: &[String],
    is_dir_module: bool,
    modules: &BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    let (mut base, rest): (Vec<String>, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (from.to_vec(), &path[1..]),
        Some("super") => {
            let mut base = from.to_vec();
            let mut rest = path;
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        _ => return None,
    };
    // `self::` in a non-mod file names its own items; `super::` of `a/b.rs` is `a`.
    let _ = is_dir_module;
    let mut found = base.clone();
    for part in rest {
        base.push(part.clone());
        if modules.contains(&base) {
            found = base.clone();
        } else {
            break;
        }
    }
    Some(found)
}

#[test]
fn no_import_circles_between_source_files() {
    let files = library_files();
    let modules: BTreeSet<Vec<String>> = files.keys().cloned().collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, path) in &files {
        let code = code_of(&std::fs::read_to_string(path).unwrap());
        let is_dir_module = path.ends_with("mod.rs") || path.ends_with("lib.rs");
        let mut named = named_paths(&code);
        // In a folder's mod.rs (or lib.rs), `child::f()` names a declared child module without `self::`.
        if is_dir_module {
            for child in declared_children(&code) {
                named.extend(
                    relative_paths(&code, &child)
                        .into_iter()
                        .map(|p| std::iter::once("self".to_owned()).chain(p).collect()),
                );
            }
        }
        for named in named {
            if let Some(target) = resolve(&named, module, is_dir_module, &modules)
                && &target != module
            {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    let name = |m: &Vec<String>| files[m].strip_prefix(src()).unwrap().display().to_string();
    let cycles = strongly_connected(&modules, &edges);
    let report: Vec<String> = cycles
        .iter()
        .map(|c| {
            // The edges inside the circle, to see what to move.
            let inside: Vec<String> = c
                .iter()
                .flat_map(|from| {
                    edges[from]
                        .iter()
                        .filter(|to| c.contains(to))
                        .map(move |to| format!("    {} -> {}", name(from), name(to)))
                })
                .collect();
            format!(
                "{}\n{}",
                c.iter().map(name).collect::<Vec<_>>().join(" <-> "),
                inside.join("\n")
            )
        })
        .collect();
    eprintln!(
        "FIGURES layout: {} library files, {} import edges, {} circle(s)",
        files.len(),
        edges.values().map(BTreeSet::len).sum::<usize>(),
        cycles.len()
    );
    assert!(
        report.is_empty(),
        "files that import each other (move the shared vocabulary into a module below both):\n{}",
        report.join("\n")
    );
}

/// Tarjan's strongly connected components of more than one module.
fn strongly_connected(
    nodes: &BTreeSet<Vec<String>>,
    edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<Vec<String>, usize>,
        low: BTreeMap<Vec<String>, usize>,
        stack: Vec<Vec<String>>,
        on_stack: BTreeSet<Vec<String>>,
        next: usize,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit(s: &mut State, v: &Vec<String>) {
        s.index.insert(v.clone(), s.next);
        s.low.insert(v.clone(), s.next);
        s.next += 1;
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        let targets: Vec<Vec<String>> = s.edges.get(v).into_iter().flatten().cloned().collect();
        for w in targets {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let low = s.low[v].min(s.low[&w]);
                s.low.insert(v.clone(), low);
            } else if s.on_stack.contains(&w) {
                let low = s.low[v].min(s.index[&w]);
                s.low.insert(v.clone(), low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = &w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn no_file_holds_more_than_600_lines_of_code() {
    let mut over = Vec::new();
    let mut largest = (0, String::new());
    for path in library_files().values() {
        let code = code_of(&std::fs::read_to_string(path).unwrap());
        let lines = code.lines().filter(|l| !l.trim().is_empty()).count();
        let name = path.strip_prefix(src()).unwrap().display().to_string();
        if lines > largest.0 {
            largest = (lines, name.clone());
        }
        if lines > MAX_CODE_LINES {
            over.push(format!("{name}: {lines}"));
        }
    }
    eprintln!(
        "FIGURES layout: largest file {} with {} lines of code",
        largest.1, largest.0
    );
    assert!(
        over.is_empty(),
        "files over {MAX_CODE_LINES} lines of non-test code (split them by job): {over:?}"
    );
}

#[test]
fn the_checker_sees_circles_and_use_trees() {
    let mut paths = Vec::new();
    expand_tree("crate::{a::{b, c::D}, e as f}", &mut Vec::new(), &mut paths);
    assert_eq!(
        paths,
        [
            vec!["crate", "a", "b"],
            vec!["crate", "a", "c", "D"],
            vec!["crate", "e"]
        ]
    );
    let code =
        code_of("// use crate::x;\nlet s = \"crate::y\";\nuse super::z::W;\ncrate::v::f();\n");
    let named = named_paths(&code);
    assert!(named.contains(&vec!["super".into(), "z".into(), "W".into()]));
    assert!(named.contains(&vec!["crate".into(), "v".into(), "f".into()]));
    assert!(
        !named
            .iter()
            .any(|p| p.contains(&"x".to_owned()) || p.contains(&"y".to_owned()))
    );
    let m = |s: &str| {
        s.split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let nodes: BTreeSet<Vec<String>> = [m("a"), m("b"), m("c")].into();
    let edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = [
        (m("a"), [m("b")].into()),
        (m("b"), [m("a")].into()),
        (m("c"), [m("a")].into()),
    ]
    .into();
    assert_eq!(
        strongly_connected(&nodes, &edges),
        vec![vec![m("a"), m("b")]]
    );
}
