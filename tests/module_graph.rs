//! Dependencies between the crate's files point one way.
//!
//! Reads every `src/**/*.rs`, finds which of the crate's files each one
//! refers to (`use` trees, `crate::…`, `super::…`, `self::…`, child modules
//! by name, and `tstore::…` in the binary's files), and fails on
//!
//! - an import loop: files that reach each other through these references;
//! - an arrow that does not point down: each top-level module has a floor
//!   (`FLOORS`), and refers only to modules on lower floors.
//!
//! A file's references to its own module and the modules that contain it
//! (`super::…`, `crate::store::…` from `store/tmp.rs`) are not counted: a
//! submodule is a part of its parent, which declares it, and may use what
//! the parent holds. Its parent using it is an ordinary arrow.
//!
//! Plain text scanning: comments, string and character literals, and
//! `#[cfg(test)]` items are blanked first (a test may reach anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate's top-level modules by floor, lowest first: a module refers
/// only to modules on floors below its own (ARCHITECTURE.md draws the same
/// graph). A new module gets a floor here, which is where its place in the
/// data flow is decided.
const FLOORS: &[&[&str]] = &[
    &[
        "platform", "progress", "activate", "local", "failures", "budget",
    ],
    &["fsinfo", "process", "http", "config"],
    &["store", "dist"],
    &["link", "uv", "check"],
    &["interpreter"],
    &["lock", "fetch"],
    &["materialize", "transfer"],
    &["sync", "upkeep"],
    &["cli"],
    &["main"],
];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|floor| floor.contains(&module))
}

#[test]
fn no_import_loops() {
    let graph = Graph::of_crate(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let loops = graph.loops();
    assert!(
        loops.is_empty(),
        "import loops between files (a loop is a sign that one of them owns two things; \
         move what both need into a module of its own):\n{}",
        loops
            .iter()
            .map(|cycle| format!("  {}", cycle.join(" → ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn modules_refer_only_to_lower_floors() {
    let graph = Graph::of_crate(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let mut wrong = Vec::new();
    let mut unplaced = BTreeSet::new();
    for (from, targets) in &graph.edges {
        let from_module = top_module(from);
        for to in targets {
            let to_module = top_module(to);
            if from_module == to_module || from == "lib.rs" {
                continue;
            }
            match (floor_of(from_module), floor_of(to_module)) {
                (Some(high), Some(low)) if low < high => {}
                (Some(_), Some(_)) => wrong.push(format!("  {from} → {to}")),
                (from_floor, to_floor) => {
                    if from_floor.is_none() {
                        unplaced.insert(from_module);
                    }
                    if to_floor.is_none() {
                        unplaced.insert(to_module);
                    }
                }
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules with no floor in FLOORS (tests/module_graph.rs): {unplaced:?}; give each the \
         floor above everything it uses"
    );
    assert!(
        wrong.is_empty(),
        "references that do not point down the floors (FLOORS in tests/module_graph.rs; a \
         module may use only modules on floors below its own):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn platform_refers_to_nothing_else_of_the_crate() {
    let graph = Graph::of_crate(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let wrong: Vec<String> = graph
        .edges
        .iter()
        .filter(|(from, _)| from.starts_with("platform/"))
        .flat_map(|(from, targets)| {
            targets
                .iter()
                .filter(|to| !to.starts_with("platform/"))
                .map(move |to| format!("  {from} → {to}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "platform knows nothing of the crate:\n{}",
        wrong.join("\n")
    );
}

/// The first module of a file's path: `store/db.rs` → `store`, `uv.rs` → `uv`.
fn top_module(file: &str) -> &str {
    let first = file.split('/').next().unwrap_or(file);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// Which crate a file belongs to: the library (`lib.rs`) or the binary
/// (`main.rs` and the modules it declares).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Krate {
    Lib,
    Bin,
}

/// Files by module path, and the references between files.
struct Graph {
    /// (crate, module path) → file, relative to `src/`.
    modules: BTreeMap<(Krate, Vec<String>), String>,
    /// file → the files it refers to.
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn of_crate(src: &Path) -> Self {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        let main = std::fs::read_to_string(src.join("main.rs")).unwrap_or_default();
        let bin_modules = declared_modules(&strip(&main));
        let mut sources = Vec::new();
        for path in files {
            let rel = path
                .strip_prefix(src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let module = module_path(&rel);
            let krate = match module.first() {
                _ if rel == "main.rs" => Krate::Bin,
                Some(first) if bin_modules.contains(first) => Krate::Bin,
                _ => Krate::Lib,
            };
            let text = std::fs::read_to_string(&path).unwrap();
            sources.push((rel, krate, module, text));
        }
        Self::of_sources(sources)
    }

    /// The graph of files given as (path under src/, crate, module path, text).
    fn of_sources(sources: Vec<(String, Krate, Vec<String>, String)>) -> Self {
        let modules: BTreeMap<_, _> = sources
            .iter()
            .map(|(rel, krate, module, _)| ((*krate, module.clone()), rel.clone()))
            .collect();
        let mut graph = Self {
            modules,
            edges: BTreeMap::new(),
        };
        for (rel, krate, module, text) in &sources {
            let code = strip(text);
            let mut targets = BTreeSet::new();
            for path in referenced_paths(&code) {
                if let Some((target_krate, target)) = graph.resolve(*krate, module, &path)
                    && !(target_krate == *krate && module.starts_with(&target))
                {
                    targets.insert(graph.modules[&(target_krate, target)].clone());
                }
            }
            graph.edges.insert(rel.clone(), targets);
        }
        graph
    }

    /// The module `path`, as written in module `module` of `krate`, refers
    /// to: the deepest module on the path that has a file. `None` for paths
    /// outside the crate (std, dependencies, local items).
    fn resolve(
        &self,
        krate: Krate,
        module: &[String],
        path: &[String],
    ) -> Option<(Krate, Vec<String>)> {
        let (target_krate, mut full) = match path.first()?.as_str() {
            "crate" => (krate, Vec::new()),
            "tstore" if krate == Krate::Bin => (Krate::Lib, Vec::new()),
            "self" => (krate, module.to_vec()),
            "super" => (krate, module.to_vec()),
            first => {
                // A child module named without a prefix.
                let mut child = module.to_vec();
                child.push(first.to_string());
                if !self.modules.contains_key(&(krate, child)) {
                    return None;
                }
                (krate, module.to_vec())
            }
        };
        let mut rest = path;
        if matches!(path[0].as_str(), "crate" | "tstore" | "self") {
            rest = &path[1..];
        }
        while let Some((first, tail)) = rest.split_first() {
            if first != "super" {
                break;
            }
            full.pop()?;
            rest = tail;
        }
        full.extend(rest.iter().cloned());
        (0..=full.len())
            .rev()
            .map(|len| (target_krate, full[..len].to_vec()))
            .find(|key| self.modules.contains_key(key))
    }

    /// Every strongly connected set of more than one file, each shown as
    /// one cycle through all of its files' shortest links, first file last
    /// again.
    fn loops(&self) -> Vec<Vec<String>> {
        let mut cycles = Vec::new();
        for component in self.components() {
            if component.len() < 2 {
                continue;
            }
            let start = component.iter().next().unwrap().clone();
            // Walk from `start` through the component, always taking the
            // shortest way to a file not yet shown, and back.
            let mut cycle = vec![start.clone()];
            let mut unseen: BTreeSet<_> = component.iter().filter(|f| **f != start).collect();
            let mut at = start.clone();
            while !unseen.is_empty() {
                let step = self.shortest(&at, &component, |f| unseen.contains(&f.to_string()));
                for file in &step[1..] {
                    unseen.remove(file);
                }
                at = step.last().unwrap().clone();
                cycle.extend(step.into_iter().skip(1));
            }
            let back = self.shortest(&at, &component, |f| f == start);
            cycle.extend(back.into_iter().skip(1));
            cycles.push(cycle);
        }
        cycles
    }

    /// The shortest path from `from` to a file `goal` accepts, inside
    /// `within` (from included, at least one step).
    fn shortest(
        &self,
        from: &str,
        within: &BTreeSet<String>,
        goal: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let mut came_from: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([from.to_string()]);
        while let Some(file) = queue.pop_front() {
            for next in &self.edges[&file] {
                if !within.contains(next) || came_from.contains_key(next) {
                    continue;
                }
                came_from.insert(next.clone(), file.clone());
                if goal(next) {
                    let mut path = vec![next.clone()];
                    while path.last().unwrap() != from || path.len() == 1 {
                        path.push(came_from[path.last().unwrap()].clone());
                    }
                    path.reverse();
                    return path;
                }
                queue.push_back(next.clone());
            }
        }
        unreachable!("{from} lies in a strongly connected component")
    }

    /// Strongly connected components (Tarjan).
    fn components(&self) -> Vec<BTreeSet<String>> {
        struct State<'g> {
            graph: &'g Graph,
            index: BTreeMap<&'g str, usize>,
            low: BTreeMap<&'g str, usize>,
            stack: Vec<&'g str>,
            on_stack: BTreeSet<&'g str>,
            found: Vec<BTreeSet<String>>,
        }
        fn visit<'g>(s: &mut State<'g>, file: &'g str) {
            let n = s.index.len();
            s.index.insert(file, n);
            s.low.insert(file, n);
            s.stack.push(file);
            s.on_stack.insert(file);
            let graph = s.graph;
            for next in &graph.edges[file] {
                let next = next.as_str();
                if !s.index.contains_key(next) {
                    visit(s, next);
                    let low = s.low[file].min(s.low[next]);
                    s.low.insert(file, low);
                } else if s.on_stack.contains(next) {
                    let low = s.low[file].min(s.index[next]);
                    s.low.insert(file, low);
                }
            }
            if s.low[file] == s.index[file] {
                let mut component = BTreeSet::new();
                loop {
                    let member = s.stack.pop().unwrap();
                    s.on_stack.remove(member);
                    component.insert(member.to_string());
                    if member == file {
                        break;
                    }
                }
                s.found.push(component);
            }
        }
        let mut state = State {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            found: Vec::new(),
        };
        for file in self.edges.keys() {
            if !state.index.contains_key(file.as_str()) {
                visit(&mut state, file);
            }
        }
        state.found
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `lib.rs`/`main.rs` → [], `a/mod.rs` and `a.rs` → [a], `a/b.rs` → [a, b].
fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    let last = parts.pop().unwrap();
    let is_root = parts.is_empty() && (last == "lib.rs" || last == "main.rs");
    if !is_root && last != "mod.rs" {
        parts.push(last.trim_end_matches(".rs").to_string());
    }
    parts
}

/// Names of the `mod name;` declarations in (stripped) code.
fn declared_modules(code: &str) -> BTreeSet<String> {
    let tokens = tokenize(code);
    tokens
        .windows(3)
        .filter(|w| w[0] == "mod" && w[2] == ";")
        .map(|w| w[1].to_string())
        .collect()
}

/// `code` with comments, string and character literals blanked out, and
/// every item marked `#[cfg(test)]` (or `#[cfg(all(test, …))]`) removed.
fn strip(code: &str) -> String {
    skip_test_items(&blank_literals(code))
}

fn blank_literals(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let after_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i = block_comment_end(&chars, i);
            out.push(' ');
        } else if let Some(end) = raw_string_end(&chars, i).filter(|_| !after_ident) {
            i = end;
            out.push_str("\"\"");
        } else if c == '"' {
            i = string_end(&chars, i);
            out.push_str("\"\"");
        } else if let Some(end) = char_literal_end(&chars, i) {
            i = end;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The index after the (nested) block comment starting at `i`.
fn block_comment_end(chars: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                break;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// The index after the raw string (`r"…"`, `r#"…"#`, `br"…"`) starting at
/// `i`, if one starts there.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let mut j = match (chars[i], chars.get(i + 1)) {
        ('r', _) => i + 1,
        ('b', Some('r')) => i + 2,
        _ => return None,
    };
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(j)
}

/// The index after the string literal whose opening quote is at `i`.
fn string_end(chars: &[char], mut i: usize) -> usize {
    i += 1;
    while i < chars.len() && chars[i] != '"' {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The index after the character literal (`'x'`, `'\n'`, `'\u{…}'`)
/// starting at `i`; `None` for a lifetime or anything else.
fn char_literal_end(chars: &[char], i: usize) -> Option<usize> {
    if chars[i] != '\'' {
        return None;
    }
    if chars.get(i + 1) == Some(&'\\') {
        let mut j = i + 3;
        while j < chars.len() && chars[j] != '\'' {
            j += 1;
        }
        return Some(j + 1);
    }
    (chars.get(i + 2) == Some(&'\'')).then_some(i + 3)
}

/// Removes each item after a `#[cfg(test)]`-like attribute: up to its
/// `;`, or through its `{ … }` block.
fn skip_test_items(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = find_test_cfg(rest) {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let attr_end = after.find(']').map_or(after.len(), |e| e + 1);
        let item = &after[attr_end..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (k, ch) in item.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn find_test_cfg(code: &str) -> Option<usize> {
    ["#[cfg(test)]", "#[cfg(all(test"]
        .iter()
        .filter_map(|needle| code.find(needle))
        .min()
}

/// Identifiers and the punctuation a path is made of.
fn tokenize(code: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            tokens.push(&code[start..i]);
        } else if c == b':' && bytes.get(i + 1) == Some(&b':') {
            tokens.push("::");
            i += 2;
        } else if c.is_ascii_whitespace() || !c.is_ascii() {
            i += 1;
        } else {
            tokens.push(&code[i..i + 1]);
            i += 1;
        }
    }
    tokens
}

/// Every path in (stripped) code that may name a module: each path a `use`
/// tree expands to, and each `a::b::…` elsewhere (its idents up to the
/// first non-ident).
fn referenced_paths(code: &str) -> Vec<Vec<String>> {
    let tokens = tokenize(code);
    let mut paths = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "use" {
            let (tree, end) = use_tree(&tokens, i + 1, &[]);
            paths.extend(tree);
            i = end;
            continue;
        }
        let starts_path = is_ident(tokens[i])
            && tokens.get(i + 1) == Some(&"::")
            && (i == 0 || tokens[i - 1] != "::")
            && (i == 0 || tokens[i - 1] != "$" || tokens[i] == "crate");
        if starts_path {
            let mut path = vec![tokens[i].to_string()];
            let mut j = i + 1;
            while tokens.get(j) == Some(&"::") && tokens.get(j + 1).is_some_and(|t| is_ident(t)) {
                path.push(tokens[j + 1].to_string());
                j += 2;
            }
            paths.push(path);
            i = j;
            continue;
        }
        i += 1;
    }
    paths
}

/// Expands the use tree starting at `tokens[i]` under `prefix`; returns the
/// paths and the index after the tree (after `;` at the top level).
fn use_tree(tokens: &[&str], mut i: usize, prefix: &[String]) -> (Vec<Vec<String>>, usize) {
    let mut paths = Vec::new();
    let mut path = prefix.to_vec();
    while i < tokens.len() {
        match tokens[i] {
            "::" => i += 1,
            "{" => {
                i += 1;
                while i < tokens.len() && tokens[i] != "}" {
                    let (inner, end) = use_tree(tokens, i, &path);
                    paths.extend(inner);
                    i = end;
                    if tokens.get(i) == Some(&",") {
                        i += 1;
                    }
                }
                i += 1;
                return (paths, skip_semicolon(tokens, i, prefix));
            }
            "self" if !path.is_empty() => i += 1,
            "as" => i += 2,
            "*" => i += 1,
            "," | "}" | ";" => break,
            t if is_ident(t) => {
                path.push(t.to_string());
                i += 1;
            }
            _ => i += 1,
        }
    }
    paths.push(path);
    (paths, skip_semicolon(tokens, i, prefix))
}

/// At the top of a use tree, moves past its `;`.
fn skip_semicolon(tokens: &[&str], i: usize, prefix: &[String]) -> usize {
    if prefix.is_empty() && tokens.get(i) == Some(&";") {
        i + 1
    } else {
        i
    }
}

fn is_ident(token: &str) -> bool {
    token
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
}

/// The scanner itself, on small made-up crates.
mod scanner {
    use super::*;

    fn source(rel: &str, krate: Krate, text: &str) -> (String, Krate, Vec<String>, String) {
        (rel.into(), krate, module_path(rel), text.into())
    }

    fn edges(graph: &Graph, from: &str) -> Vec<String> {
        graph.edges[from].iter().cloned().collect()
    }

    #[test]
    fn use_trees_crate_super_and_child_paths_are_followed() {
        let graph = Graph::of_sources(vec![
            source("lib.rs", Krate::Lib, "pub mod a; pub mod b; pub mod c;"),
            source(
                "a/mod.rs",
                Krate::Lib,
                "mod x;\nuse crate::{b::{self, Thing as T}, c};\nfn f() { x::go(); }",
            ),
            source(
                "a/x.rs",
                Krate::Lib,
                "use super::super::c::deep::Item; use super::Local; use crate::a::Other;",
            ),
            source("b.rs", Krate::Lib, "fn g() { crate::c::h(); }"),
            source("c/mod.rs", Krate::Lib, "pub mod deep;"),
            source("c/deep.rs", Krate::Lib, "fn i() { std::mem::drop(1); }"),
            source("main.rs", Krate::Bin, "mod cli;"),
            source(
                "cli/mod.rs",
                Krate::Bin,
                "use tstore::a; fn m() { crate::cli::q(); }",
            ),
        ]);
        assert_eq!(edges(&graph, "a/mod.rs"), ["a/x.rs", "b.rs", "c/mod.rs"]);
        assert_eq!(edges(&graph, "a/x.rs"), ["c/deep.rs"]);
        assert_eq!(edges(&graph, "b.rs"), ["c/mod.rs"]);
        assert!(edges(&graph, "c/deep.rs").is_empty());
        assert_eq!(edges(&graph, "cli/mod.rs"), ["a/mod.rs"]);
        assert!(edges(&graph, "main.rs").is_empty());
        assert!(graph.loops().is_empty());
    }

    #[test]
    fn comments_strings_and_test_items_are_not_references() {
        let graph = Graph::of_sources(vec![
            source("lib.rs", Krate::Lib, "pub mod a; pub mod b;"),
            source(
                "a.rs",
                Krate::Lib,
                "// crate::b::x\n/* crate::b /* nested */ crate::b */\n\
                 const S: &str = \"crate::b::y\"; const R: &str = r#\"crate::b\"#;\n\
                 const C: char = '\"'; fn f<'l>(_: &'l str) {}\n\
                 #[cfg(test)]\nmod tests { use crate::b; }\n\
                 #[cfg(all(test, unix))]\nuse crate::b::z;",
            ),
            source("b.rs", Krate::Lib, "use crate::a::f;"),
        ]);
        assert!(edges(&graph, "a.rs").is_empty());
        assert_eq!(edges(&graph, "b.rs"), ["a.rs"]);
    }

    #[test]
    fn a_loop_is_shown_through_every_file_in_it() {
        let graph = Graph::of_sources(vec![
            source(
                "lib.rs",
                Krate::Lib,
                "pub mod a; pub mod b; pub mod c; pub mod d;",
            ),
            source("a.rs", Krate::Lib, "use crate::b::X;"),
            source("b.rs", Krate::Lib, "use crate::c::Y;"),
            source("c.rs", Krate::Lib, "use crate::a::Z; use crate::d::W;"),
            source("d.rs", Krate::Lib, ""),
        ]);
        assert_eq!(graph.loops(), [["a.rs", "b.rs", "c.rs", "a.rs"]]);
        assert_eq!(top_module("store/db.rs"), "store");
        assert_eq!(top_module("uv.rs"), "uv");
    }
}
