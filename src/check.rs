//! `tstore check`: import every top-level module of every distribution in a
//! tier, each in a fresh interpreter, in parallel, and report the failures.
//!
//! A distribution's modules are found the way Python's path finder would
//! find them in site-packages, from the files its RECORD lists (files under
//! `<name>.data/purelib/` and `platlib/` count where they are installed):
//!
//! - a folder is a module when it holds, at any depth through folders whose
//!   names are identifiers, a module file: a regular package (`__init__.py`)
//!   or a namespace package (PEP 420);
//! - a file at the top is a module when it is source (`.py`), sourceless
//!   bytecode (`.pyc`) or an extension module (`.so`, `.abi3.so`,
//!   `.cpython-*.so`: the suffixes of `importlib.machinery.EXTENSION_SUFFIXES`
//!   on Linux); other files there (`.pth` files, shared libraries such as
//!   `libfoo.so.1`, data) are not modules;
//! - names that are not identifiers an `import` statement accepts are
//!   skipped, which leaves out `*.libs` (auditwheel's vendored libraries),
//!   `*.dist-info`, `*.data` and `*-stubs` (PEP 561 stub-only packages); so
//!   is `__pycache__`;
//! - `top_level.txt` is a hint, checked against the files: it adds a folder
//!   the files show but hold no module (Python imports it as a namespace
//!   package) and nothing the files do not show.
//!
//! A name several distributions provide (a namespace package split across
//! them, say) is imported once and a failure is reported under each. A
//! `ModuleNotFoundError` whose missing module no distribution of the tier
//! provides and that is not in the standard library is an undeclared
//! dependency of the distribution whose import failed.
//!
//! The interpreter runs isolated (`-I`): the current directory, `PYTHON*`
//! variables and the user's site-packages do not change what is imported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::store::Store;
use crate::store::db::DistRecord;

/// One import that failed, for one distribution that provides the module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub distribution: String,
    pub module: String,
    /// The exception's type (`ModuleNotFoundError`, `pkg.errors.Error`);
    /// `None` when the interpreter ended without one (a crash, a timeout).
    pub error_type: Option<String>,
    /// The exception's message, or what happened instead.
    pub message: String,
    /// The missing module of a `ModuleNotFoundError` that no distribution of
    /// the tier provides and the standard library does not have.
    pub undeclared_dependency: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error_type {
            Some(kind) => write!(f, "{kind}: {}", self.message)?,
            None => write!(f, "{}", self.message)?,
        }
        if let Some(missing) = &self.undeclared_dependency {
            write!(
                f,
                " (undeclared dependency: no package of the tier provides `{missing}`)"
            )?;
        }
        Ok(())
    }
}

/// A module to import and the distributions that provide it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Module {
    pub module: String,
    pub distributions: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub distributions: usize,
    /// How many modules were imported (each once).
    pub modules: usize,
    /// How many of them failed.
    pub failed_modules: usize,
    /// One entry per failed module and distribution providing it.
    pub failures: Vec<Failure>,
    /// Every module imported and the distributions that provide it.
    pub checked: Vec<Module>,
}

/// Longest an import may take before it counts as failed.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(120);

/// Imports every module of `dists` (the distributions of `venv`) with
/// `venv`'s interpreter, `jobs` at a time.
pub fn check(
    store: &Store,
    venv: &Path,
    dists: &[DistRecord],
    jobs: usize,
    progress: &dyn crate::progress::Progress,
) -> anyhow::Result<CheckReport> {
    let mut providers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for dist in dists {
        for module in top_level_modules(store, dist.id)? {
            providers.entry(module).or_default().push(dist.name.clone());
        }
    }
    let checked: Vec<Module> = providers
        .into_iter()
        .map(|(module, mut distributions)| {
            distributions.sort();
            distributions.dedup();
            Module {
                module,
                distributions,
            }
        })
        .collect();
    let python = venv.join("bin/python");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()?;
    progress.start("importing", checked.len() as u64, 0);
    let errors: Vec<(&Module, ImportError)> = pool.install(|| {
        checked
            .par_iter()
            .filter_map(|m| {
                let result = import(&python, &m.module);
                progress.item_done(&m.module);
                result.err().map(|e| (m, e))
            })
            .collect()
    });
    progress.finish();
    let provided: BTreeSet<&str> = checked.iter().map(|m| m.module.as_str()).collect();
    let stdlib = if errors.iter().any(|(_, e)| e.missing.is_some()) {
        stdlib_module_names(&python)?
    } else {
        BTreeSet::new()
    };
    let mut failures = Vec::new();
    for (module, error) in &errors {
        let undeclared = error
            .missing
            .as_deref()
            .map(|m| m.split('.').next().unwrap_or(m))
            .filter(|top| !provided.contains(top) && !stdlib.contains(*top))
            .map(str::to_string);
        for distribution in &module.distributions {
            failures.push(Failure {
                distribution: distribution.clone(),
                module: module.module.clone(),
                error_type: error.kind.clone(),
                message: error.message.clone(),
                undeclared_dependency: undeclared.clone(),
            });
        }
    }
    failures.sort_by(|a, b| (&a.distribution, &a.module).cmp(&(&b.distribution, &b.module)));
    Ok(CheckReport {
        distributions: dists.len(),
        modules: checked.len(),
        failed_modules: errors.len(),
        failures,
        checked,
    })
}

/// The importable top-level names of a distribution in the store (sorted).
pub fn top_level_modules(store: &Store, dist_id: i64) -> anyhow::Result<Vec<String>> {
    let rows = store.db.distribution_files(dist_id)?;
    let mut hint = String::new();
    if let Some(row) = rows.iter().find(|r| {
        r.path
            .split_once('/')
            .is_some_and(|(dir, file)| dir.ends_with(".dist-info") && file == "top_level.txt")
    }) && let Some(key) = &row.object
    {
        // Only a hint: bytes that are not UTF-8 cannot name a module.
        hint = String::from_utf8_lossy(&fs_err::read(store.object_path(key))?).into_owned();
    }
    Ok(importable_names(
        rows.iter().map(|r| r.path.as_str()),
        hint.lines(),
    ))
}

/// The top-level names Python can import from a wheel with these file
/// paths, given the lines of its `top_level.txt` (see the module docs).
pub fn importable_names<'a>(
    paths: impl IntoIterator<Item = &'a str>,
    top_level_txt: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let mut names = BTreeSet::new();
    let mut folders_without_modules = BTreeSet::new();
    for path in paths {
        let Some(installed) = site_packages_path(path) else {
            continue;
        };
        let mut parts = installed.split('/');
        let first = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        match rest.split_last() {
            None => {
                if let Some(name) = module_file_stem(first).filter(|n| is_identifier(n)) {
                    names.insert(name.to_string());
                }
            }
            Some((file, folders)) => {
                if !is_identifier(first) || first == "__pycache__" {
                    continue;
                }
                let holds_module = module_file_stem(file).is_some()
                    && folders
                        .iter()
                        .all(|d| is_identifier(d) && *d != "__pycache__");
                if holds_module {
                    names.insert(first.to_string());
                } else {
                    folders_without_modules.insert(first);
                }
            }
        }
    }
    for line in top_level_txt {
        // `a/b` in old top_level.txt files means the package `a.b`.
        let top = line.trim().split(['/', '.']).next().unwrap_or_default();
        if folders_without_modules.contains(top) {
            names.insert(top.to_string());
        }
    }
    names.into_iter().collect()
}

/// Where a wheel's file lands relative to site-packages, if it does.
fn site_packages_path(path: &str) -> Option<&str> {
    let (first, rest) = path.split_once('/').unwrap_or((path, ""));
    if first.ends_with(".data") {
        let (scheme, inside) = rest.split_once('/')?;
        return matches!(scheme, "purelib" | "platlib").then_some(inside);
    }
    Some(path)
}

/// The module a file name makes, whatever its name's validity: `x.py`,
/// `x.pyc`, `x.so`, `x.abi3.so`, `x.cpython-311-x86_64-linux-gnu.so` → `x`.
fn module_file_stem(file: &str) -> Option<&str> {
    if let Some(stem) = file.strip_suffix(".py").or(file.strip_suffix(".pyc")) {
        return Some(stem);
    }
    let stem = file.strip_suffix(".so")?;
    match stem.split_once('.') {
        None => Some(stem),
        Some((name, tag)) if tag == "abi3" || tag.starts_with("cpython-") => Some(name),
        Some(_) => None,
    }
}

/// Python's reserved words: identifiers an `import` statement refuses.
const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// Whether `import name` is valid Python for this one name component.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
        && !KEYWORDS.contains(&name)
}

/// Why one import failed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImportError {
    kind: Option<String>,
    message: String,
    /// The module a `ModuleNotFoundError` names.
    missing: Option<String>,
}

impl ImportError {
    fn other(message: String) -> Self {
        Self {
            kind: None,
            message,
            missing: None,
        }
    }
}

/// Imports `module` in a fresh, isolated interpreter.
fn import(python: &Path, module: &str) -> Result<(), ImportError> {
    let (mut child, started_child) = crate::process::spawn(
        crate::process::dies_with_parent(&mut Command::new(python))
            .args(["-I", "-c", &format!("import {module}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .map_err(|e| ImportError::other(format!("cannot run {}: {e}", python.display())))?;
    // Read stderr while waiting, so a long traceback cannot fill the pipe.
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > IMPORT_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ImportError::other(format!(
                    "the import did not finish in {} s",
                    IMPORT_TIMEOUT.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(ImportError::other(e.to_string())),
        }
    };
    started_child.ended(&status);
    let stderr = reader.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&stderr);
    Err(parse_error(&stderr).unwrap_or_else(|| ImportError::other(format!("exited with {status}"))))
}

/// The exception at the end of a traceback: its last line that is not
/// indented, split into type and message.
fn parse_error(stderr: &str) -> Option<ImportError> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with(' ') && !l.starts_with('\t'))?
        .trim();
    let (kind, message) = match line.split_once(": ") {
        Some((kind, message)) if kind.split('.').all(is_identifier) => (kind, message),
        _ if line.split('.').all(is_identifier) => (line, ""),
        _ => return Some(ImportError::other(line.to_string())),
    };
    let missing = (kind == "ModuleNotFoundError")
        .then(|| {
            message
                .strip_prefix("No module named '")?
                .strip_suffix('\'')
        })
        .flatten()
        .map(str::to_string);
    Some(ImportError {
        kind: Some(kind.to_string()),
        message: message.to_string(),
        missing,
    })
}

/// The interpreter's `sys.stdlib_module_names`.
fn stdlib_module_names(python: &Path) -> anyhow::Result<BTreeSet<String>> {
    let out = crate::process::output(
        crate::process::dies_with_parent(&mut Command::new(python))
            .args([
                "-I",
                "-c",
                "import sys; print('\\n'.join(sys.stdlib_module_names))",
            ])
            .stdin(Stdio::null()),
    )
    .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", python.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} -I -c 'import sys; print(sys.stdlib_module_names)' exited with {}: {}",
        python.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_found_as_python_finds_them() {
        // (layout, files of the wheel, top_level.txt, importable names)
        let table: &[(&str, &[&str], &str, &[&str])] = &[
            (
                "regular package",
                &[
                    "pkg/__init__.py",
                    "pkg/sub/mod.py",
                    "pkg-1.0.dist-info/RECORD",
                ],
                "",
                &["pkg"],
            ),
            ("single-file module", &["six.py"], "", &["six"]),
            ("sourceless module", &["old.pyc"], "", &["old"]),
            (
                "extension modules",
                &[
                    "_cffi_backend.cpython-311-x86_64-linux-gnu.so",
                    "_limited.abi3.so",
                    "_plain.so",
                ],
                "",
                &["_cffi_backend", "_limited", "_plain"],
            ),
            (
                "shared libraries are not modules",
                &["libfoo.so.1", "libbar.so.1.2.so", "README.txt"],
                "",
                &[],
            ),
            (
                "auditwheel's .libs folder",
                &[
                    "faiss/__init__.py",
                    "faiss_cpu.libs/libgomp-a34b3233.so.1.0.0",
                    "faiss_cpu-1.0.dist-info/top_level.txt",
                ],
                "",
                &["faiss"],
            ),
            (
                "a .libs folder holding a .so with a module's suffix",
                &["scikit_learn.libs/libgomp.so"],
                "",
                &[],
            ),
            (
                "namespace package",
                &["jaraco/functools/__init__.py", "jaraco/functools/py.typed"],
                "",
                &["jaraco"],
            ),
            (
                "namespace package with modules directly inside",
                &["google/protobuf_thing.py"],
                "",
                &["google"],
            ),
            (
                "stub-only package",
                &["six-stubs/__init__.pyi", "six-stubs/moves/__init__.pyi"],
                "",
                &[],
            ),
            (
                "folder of stubs without -stubs",
                &["typings/__init__.pyi", "typings/py.typed"],
                "",
                &[],
            ),
            (
                ".pth files and bytecode caches",
                &[
                    "distutils-precedence.pth",
                    "__pycache__/six.cpython-311.pyc",
                    "__editable__.pkg.pth",
                ],
                "",
                &[],
            ),
            (
                "names that are not identifiers",
                &[
                    "my-pkg/__init__.py",
                    "1st/__init__.py",
                    "odd.name.py",
                    "class/__init__.py",
                    "pkg/not-a-package/mod.py",
                ],
                "",
                &[],
            ),
            (
                "a module only inside a folder that is not an identifier",
                &["tools/bin-scripts/run.py"],
                "",
                &[],
            ),
            (
                "purelib and platlib of .data count where installed",
                &[
                    "pkg-1.0.data/purelib/pure/__init__.py",
                    "pkg-1.0.data/platlib/_native.cpython-311-x86_64-linux-gnu.so",
                    "pkg-1.0.data/scripts/tool.py",
                    "pkg-1.0.data/data/share/x.py",
                ],
                "",
                &["_native", "pure"],
            ),
            (
                "top_level.txt names a data-only folder the files show",
                &["fonts/a.ttf", "docs/index.txt"],
                "fonts\n",
                &["fonts"],
            ),
            (
                "top_level.txt names nothing the files do not show",
                &["real/__init__.py"],
                "real\nghost\nfaiss_cpu.libs\nsix-stubs\n",
                &["real"],
            ),
            (
                "old top_level.txt with a path",
                &["ns/sub/data.bin"],
                "ns/sub\n",
                &["ns"],
            ),
        ];
        for (layout, files, top_level, expected) in table {
            let found = importable_names(files.iter().copied(), top_level.lines());
            assert_eq!(found, *expected, "{layout}");
        }
    }

    #[test]
    fn the_exception_is_split_into_type_and_message() {
        let trace = "Traceback (most recent call last):\n  File \"<string>\", line 1, in <module>\n\
                     ModuleNotFoundError: No module named 'x.y'\n";
        assert_eq!(
            parse_error(trace).unwrap(),
            ImportError {
                kind: Some("ModuleNotFoundError".into()),
                message: "No module named 'x.y'".into(),
                missing: Some("x.y".into()),
            }
        );
        let dotted = "Traceback …\n  File \"x\"\npkg.errors.Error: bad: really\n";
        let error = parse_error(dotted).unwrap();
        assert_eq!(error.kind.as_deref(), Some("pkg.errors.Error"));
        assert_eq!(error.message, "bad: really");
        assert_eq!(error.missing, None);
        assert_eq!(
            parse_error("Traceback …\nKeyboardInterrupt\n")
                .unwrap()
                .kind,
            Some("KeyboardInterrupt".into())
        );
        let crash = parse_error("Fatal Python error: Segmentation fault\n").unwrap();
        assert_eq!(crash.kind, None);
        assert_eq!(crash.message, "Fatal Python error: Segmentation fault");
        assert!(parse_error("\n\n").is_none());
    }
}
