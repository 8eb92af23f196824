//! Parsers for the untrusted parts of a wheel (PEP 427 / binary distribution
//! format): entry names, `RECORD`, `METADATA`, `WHEEL` and
//! `entry_points.txt`.
//!
//! [`safe_relative_path`] is the only function that turns a name from a wheel
//! into a path; everything that writes a file named by a wheel goes through it.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;

use super::db::FileRow;

/// Why a name from a wheel cannot become a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafePath {
    #[error("is empty")]
    Empty,
    #[error("is absolute")]
    Absolute,
    #[error("contains `..`")]
    ParentDir,
    #[error("contains a backslash or NUL byte")]
    BadCharacter,
}

/// Turns an untrusted `/`-separated name into a relative path that cannot
/// leave the directory it is joined to. A name that is already plain
/// (no `.`, `..` or empty parts) is returned as it is, without allocating:
/// materialize runs every file of a tier through here.
pub fn safe_relative_path(name: &str) -> Result<Cow<'_, Path>, UnsafePath> {
    if name.contains('\\') || name.contains('\0') {
        return Err(UnsafePath::BadCharacter);
    }
    if name.starts_with('/') || (name.len() > 1 && name.as_bytes()[1] == b':') {
        return Err(UnsafePath::Absolute);
    }
    if !name.is_empty()
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
    {
        return Ok(Cow::Borrowed(Path::new(name)));
    }
    let mut out = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(UnsafePath::ParentDir),
            Component::RootDir | Component::Prefix(_) => return Err(UnsafePath::Absolute),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(UnsafePath::Empty);
    }
    Ok(Cow::Owned(out))
}

/// One line of a `RECORD` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordEntry {
    pub path: String,
    /// `(algorithm, urlsafe-base64 digest)` when the line has a hash.
    pub hash: Option<(String, String)>,
    pub size: Option<u64>,
}

/// Parses `RECORD` (CSV: path, `algo=digest`, size; fields may be quoted).
pub fn parse_record(text: &str) -> Result<Vec<RecordEntry>, String> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields = split_csv_line(line).map_err(|e| format!("RECORD line {}: {e}", index + 1))?;
        let path = fields.first().cloned().unwrap_or_default();
        if path.is_empty() {
            return Err(format!("RECORD line {}: empty path", index + 1));
        }
        let hash = match fields.get(1).map(String::as_str) {
            None | Some("") => None,
            Some(h) => {
                let (algo, digest) = h.split_once('=').ok_or_else(|| {
                    format!("RECORD line {}: hash `{h}` is not ALGO=DIGEST", index + 1)
                })?;
                Some((algo.to_string(), digest.to_string()))
            }
        };
        let size =
            match fields.get(2).map(String::as_str) {
                None | Some("") => None,
                Some(s) => Some(s.parse().map_err(|_| {
                    format!("RECORD line {}: size `{s}` is not a number", index + 1)
                })?),
            };
        entries.push(RecordEntry { path, hash, size });
    }
    Ok(entries)
}

fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if field.is_empty() => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => quoted = false,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    fields.push(field);
    Ok(fields)
}

/// Quotes a RECORD field when CSV needs it.
pub fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// The `Name` and `Version` headers of `METADATA` (core metadata).
pub fn parse_metadata(text: &str) -> Result<(String, String), String> {
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        if line.is_empty() {
            break; // headers end at the first blank line; the body follows
        }
        if let Some((key, value)) = line.split_once(':') {
            match key.trim() {
                "Name" if name.is_none() => name = Some(value.trim().to_string()),
                "Version" if version.is_none() => version = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    match (name, version) {
        (Some(n), Some(v)) => Ok((n, v)),
        (None, _) => Err("METADATA has no Name header".into()),
        (_, None) => Err("METADATA has no Version header".into()),
    }
}

/// The `Requires-Dist` headers of `METADATA`, as written (a folded header's
/// continuation lines joined by a space).
pub fn parse_requires_dist(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut in_requires = false;
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if in_requires && let Some(last) = out.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
            continue;
        }
        in_requires = false;
        if let Some((key, value)) = line.split_once(':')
            && key.trim().eq_ignore_ascii_case("Requires-Dist")
        {
            in_requires = true;
            out.push(value.trim().to_string());
        }
    }
    out
}

/// Checks the `WHEEL` file's `Wheel-Version` is one this installer reads.
pub fn check_wheel_file(text: &str) -> Result<(), String> {
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("Wheel-Version:"))
        .map(str::trim)
        .ok_or("WHEEL has no Wheel-Version header")?;
    match version.split('.').next() {
        Some("1") => Ok(()),
        _ => Err(format!(
            "Wheel-Version {version} is not supported (only 1.x)"
        )),
    }
}

/// A launcher to create from `entry_points.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPoint {
    pub name: String,
    pub module: String,
    /// Attribute path inside the module (`main`, `cli.run`), if any.
    pub attr: Option<String>,
    pub gui: bool,
}

/// The `[console_scripts]` and `[gui_scripts]` sections of `entry_points.txt`.
pub fn parse_entry_points(text: &str) -> Result<Vec<EntryPoint>, String> {
    let mut out = Vec::new();
    let mut section = String::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        let gui = match section.as_str() {
            "console_scripts" => false,
            "gui_scripts" => true,
            _ => continue,
        };
        let (name, value) = line.split_once('=').ok_or_else(|| {
            format!(
                "entry_points.txt line {}: expected NAME = MODULE:ATTR",
                index + 1
            )
        })?;
        // Extras (`[extra]`) after the object reference do not change the launcher.
        let value = value.split('[').next().unwrap_or(value).trim();
        let (module, attr) = match value.split_once(':') {
            Some((m, a)) => (m.trim(), Some(a.trim().to_string())),
            None => (value, None),
        };
        let is_dotted_name = |s: &str| {
            !s.is_empty()
                && s.split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        };
        if !is_dotted_name(module) || attr.as_deref().is_some_and(|a| !is_dotted_name(a)) {
            return Err(format!(
                "entry_points.txt line {}: `{value}` is not MODULE:ATTR",
                index + 1
            ));
        }
        out.push(EntryPoint {
            name: name.trim().to_string(),
            module: module.to_string(),
            attr,
            gui,
        });
    }
    Ok(out)
}

/// The schemes a wheel's `<name>-<version>.data/` directory may hold.
pub const DATA_SCHEMES: [&str; 5] = ["purelib", "platlib", "headers", "scripts", "data"];

/// Checks where a wheel entry (already a safe relative path) lands in a
/// venv: under `data_prefix` (`<name>-<version>.data/`) only in one of
/// [`DATA_SCHEMES`], and never on a file the venv itself owns (see
/// [`venv_owned`]). Entries outside the data directory land in
/// site-packages and cannot reach those files.
pub fn check_install_path(path: &str, data_prefix: &str) -> Result<(), String> {
    let Some(rest) = path.strip_prefix(data_prefix) else {
        return Ok(());
    };
    let (scheme, inside) = rest.split_once('/').unwrap_or((rest, ""));
    if !DATA_SCHEMES.contains(&scheme) {
        return Err(format!(
            "is in `.data/{scheme}`, which is not a scheme a wheel may install into (only {})",
            DATA_SCHEMES.join(", ")
        ));
    }
    let inside = safe_relative_path(inside)
        .map_err(|e| format!("is not a file inside `.data/{scheme}/`: its path {e}"))?;
    let inside = inside.to_string_lossy();
    let dest = match scheme {
        "scripts" => format!("bin/{inside}"),
        "data" => inside.into_owned(),
        _ => return Ok(()),
    };
    match venv_owned(&dest) {
        Some(what) => Err(format!("would replace {what} (`{dest}`)")),
        None => Ok(()),
    }
}

/// Checks a console or GUI script name from `entry_points.txt`: one plain
/// file name, and not one of the venv's own files in `bin/`.
pub fn check_script_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !(name.len() > 1 && name.as_bytes()[1] == b':');
    if !plain {
        return Err("is not a plain file name (a launcher is written to `bin/<name>`)".into());
    }
    match venv_owned(&format!("bin/{name}")) {
        Some(what) => Err(format!("would replace {what} (`bin/{name}`)")),
        None => Ok(()),
    }
}

/// What a path relative to the venv root names, when it is one of the
/// files the venv itself is made of (what `uv venv` writes: `pyvenv.cfg`,
/// the interpreter links `bin/python`, `bin/python3`, `bin/python3.N`, the
/// activation scripts, `lib64`), which no package may replace.
pub fn venv_owned(dest: &str) -> Option<&'static str> {
    match dest {
        "pyvenv.cfg" => return Some("the venv's configuration"),
        ".gitignore" | "CACHEDIR.TAG" | "bin" | "lib" | "lib64" => {
            return Some("a file of the venv itself");
        }
        _ => {}
    }
    if dest.starts_with("lib64/") {
        return Some("a file of the venv itself (`lib64` links to `lib`)");
    }
    let name = dest.strip_prefix("bin/").filter(|n| !n.contains('/'))?;
    if is_interpreter_name(name) {
        return Some("the venv's interpreter");
    }
    if name == "activate"
        || name.starts_with("activate.")
        || name == "activate_this.py"
        || name == "deactivate.bat"
        || name == "pydoc.bat"
    {
        return Some("an activation script of the venv");
    }
    None
}

/// `python`, `pythonw`, `python3`, `python3.12`, `python3.13t`, …
fn is_interpreter_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("python") else {
        return false;
    };
    let rest = rest.strip_prefix('w').unwrap_or(rest);
    let rest = rest.strip_suffix('t').unwrap_or(rest);
    let (major, minor) = rest.split_once('.').unwrap_or((rest, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor) && (minor.is_empty() || !major.is_empty())
}

/// The distribution's `<name>-<version>.dist-info` directory.
pub fn dist_info_dir(name: &str, rows: &[FileRow]) -> anyhow::Result<String> {
    Ok(rows
        .iter()
        .filter_map(|r| r.path.strip_suffix("/METADATA"))
        .find(|dir| dir.ends_with(".dist-info") && !dir.contains('/'))
        .with_context(|| format!("the store has no .dist-info for {name}: the record is damaged"))?
        .to_string())
}

/// `<name>-<version>.data/`, the prefix of the wheel's scheme directories.
pub fn data_prefix(name: &str, rows: &[FileRow]) -> anyhow::Result<String> {
    let dist_info = dist_info_dir(name, rows)?;
    Ok(format!(
        "{}.data/",
        dist_info.trim_end_matches(".dist-info")
    ))
}

/// Whether a wheel path lands in site-packages, where Python imports from:
/// the archive root and `.data/purelib|platlib`, not scripts, data or headers.
pub fn imports_from_site_packages(path: &str, data_prefix: &str) -> bool {
    match path.strip_prefix(data_prefix) {
        None => true,
        Some(rest) => rest.starts_with("purelib/") || rest.starts_with("platlib/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_paths_reject_escapes() {
        assert_eq!(
            safe_relative_path("a/./b.py").unwrap().as_ref(),
            Path::new("a/b.py")
        );
        assert_eq!(
            safe_relative_path("a//b/").unwrap().as_ref(),
            Path::new("a/b")
        );
        assert!(matches!(safe_relative_path("a/b.py"), Ok(Cow::Borrowed(_))));
        assert_eq!(safe_relative_path("../evil"), Err(UnsafePath::ParentDir));
        assert_eq!(
            safe_relative_path("a/../../evil"),
            Err(UnsafePath::ParentDir)
        );
        assert_eq!(safe_relative_path("/etc/passwd"), Err(UnsafePath::Absolute));
        assert_eq!(safe_relative_path("C:/x"), Err(UnsafePath::Absolute));
        assert_eq!(
            safe_relative_path("a\\..\\b"),
            Err(UnsafePath::BadCharacter)
        );
        assert_eq!(safe_relative_path("./"), Err(UnsafePath::Empty));
    }

    #[test]
    fn record_handles_quotes_and_missing_hashes() {
        let text =
            "a/__init__.py,sha256=abc,12\n\"we,ird.py\",sha256=def,3\nx-1.dist-info/RECORD,,\n";
        let entries = parse_record(text).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].path, "we,ird.py");
        assert_eq!(entries[0].hash, Some(("sha256".into(), "abc".into())));
        assert_eq!(entries[2].hash, None);
        assert!(parse_record("a,sha256=x,notanumber\n").is_err());
        assert_eq!(csv_field("we,ird.py"), "\"we,ird.py\"");
    }

    #[test]
    fn metadata_and_wheel_headers() {
        let meta = "Metadata-Version: 2.1\nName: My_Pkg\nVersion: 1.0\n\nName: not-this\n";
        assert_eq!(
            parse_metadata(meta).unwrap(),
            ("My_Pkg".into(), "1.0".into())
        );
        assert!(parse_metadata("Version: 1\n").is_err());
        assert!(check_wheel_file("Wheel-Version: 1.0\nRoot-Is-Purelib: true\n").is_ok());
        assert!(check_wheel_file("Wheel-Version: 2.0\n").is_err());
    }

    #[test]
    fn requires_dist_headers() {
        let meta = "Name: a\nVersion: 1\nRequires-Dist: b>=1\nrequires-dist: c ;\n  extra == 'x'\nSummary: s\n\nRequires-Dist: body\n";
        assert_eq!(
            parse_requires_dist(meta),
            ["b>=1".to_string(), "c ; extra == 'x'".to_string()]
        );
    }

    #[test]
    fn install_paths_stay_out_of_the_venvs_own_files() {
        let data = "pkg-1.0.data/";
        for ok in [
            "pkg/__init__.py",
            "pyvenv.cfg",
            "pkg-1.0.data/purelib/pkg/x.py",
            "pkg-1.0.data/scripts/tool",
            "pkg-1.0.data/scripts/python-tool",
            "pkg-1.0.data/data/share/man/x.1",
            "pkg-1.0.data/data/bin/pythonista",
            "pkg-1.0.data/headers/x.h",
        ] {
            assert_eq!(check_install_path(ok, data), Ok(()), "{ok}");
        }
        for bad in [
            "pkg-1.0.data/unknown/x",
            "pkg-1.0.data/scripts",
            "pkg-1.0.data/data/pyvenv.cfg",
            "pkg-1.0.data/data/bin/python",
            "pkg-1.0.data/data/lib64/x",
            "pkg-1.0.data/scripts/python3.12",
            "pkg-1.0.data/scripts/python3.13t",
            "pkg-1.0.data/scripts/pythonw",
            "pkg-1.0.data/scripts/activate",
            "pkg-1.0.data/scripts/activate.fish",
            "pkg-1.0.data/scripts/activate_this.py",
        ] {
            assert!(check_install_path(bad, data).is_err(), "{bad}");
        }
        for bad in [
            ".",
            "..",
            "",
            "a/b",
            "/abs",
            "../x",
            "python3",
            "activate.csh",
        ] {
            assert!(check_script_name(bad).is_err(), "{bad}");
        }
        assert_eq!(check_script_name("black"), Ok(()));
        assert_eq!(check_script_name("python-tool"), Ok(()));
    }

    #[test]
    fn entry_points_sections() {
        let text = "[console_scripts]\nhello = pkg.cli:main [extra]\nbare=pkg.mod\n[gui_scripts]\nwin = pkg:gui\n[other]\nx = y:z\n";
        let eps = parse_entry_points(text).unwrap();
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0].attr.as_deref(), Some("main"));
        assert_eq!(eps[1].attr, None);
        assert!(eps[2].gui);
        assert!(parse_entry_points("[console_scripts]\nx = a;rm -rf:b\n").is_err());
    }

    #[test]
    fn only_files_in_site_packages_are_importable() {
        let data = "pkg-1.0.data/";
        assert!(imports_from_site_packages("pkg/mod.py", data));
        assert!(imports_from_site_packages(
            "pkg-1.0.data/purelib/pkg/mod.py",
            data
        ));
        assert!(imports_from_site_packages(
            "pkg-1.0.data/platlib/mod.py",
            data
        ));
        assert!(!imports_from_site_packages(
            "pkg-1.0.data/scripts/tool.py",
            data
        ));
        assert!(!imports_from_site_packages(
            "pkg-1.0.data/data/share/x.py",
            data
        ));
        assert!(!imports_from_site_packages(
            "pkg-1.0.data/headers/x.py",
            data
        ));
        // Another distribution's data directory name is just a directory here.
        assert!(imports_from_site_packages(
            "other-2.0.data/scripts/x.py",
            data
        ));
    }
}
