//! The venv directory itself: its PEP 405 skeleton (made by `uv venv`) and
//! the keys tstore keeps in its `pyvenv.cfg` (the plan it was built from, the
//! packages `tstore edit` made private).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::fsinfo::{DIR_MODE, FILE_MODE, file_mode_like};
use crate::store::Store;
use crate::uv::Uv;

/// The `pyvenv.cfg` key holding the hash of the plan a venv was built from.
const PLAN_KEY: &str = "tstore-plan";
/// The `pyvenv.cfg` key holding the hash of the inputs a venv was built from.
const INPUTS_KEY: &str = "tstore-inputs";
/// The `pyvenv.cfg` key holding site-packages and the hash of its entries.
const ENTRIES_KEY: &str = "tstore-entries";
/// The `pyvenv.cfg` key listing packages made private by `tstore edit`.
const EDITED_KEY: &str = "tstore-edited";
/// The `pyvenv.cfg` key of a generation whose bytecode is still being
/// compiled and linked: the key of what it was built from (see
/// `materialize::pending_key`), so the next run can finish it in place.
const BYTECODE_PENDING_KEY: &str = "tstore-bytecode-pending";

/// Creates the skeleton at `staging` for a venv that will live at `target`.
///
/// `uv venv` runs once per (uv, interpreter) into a template in the store;
/// each venv gets a copy with the template's prompt replaced by its own and
/// each activation script's venv path set to `target`, quoted for its shell
/// (see [`name_venv_in_activation_scripts`]), which saves starting uv for
/// every build.
pub fn create_skeleton(
    uv: &Uv,
    store: &Store,
    interpreter: &Path,
    staging: &Path,
    target: &Path,
    prompt: &str,
) -> anyhow::Result<()> {
    let template = skeleton_template(uv, store, interpreter)?;
    copy_template(&template, staging, prompt)
        .with_context(|| format!("cannot copy the venv skeleton {}", template.display()))?;
    let origin = fs_err::read_to_string(template.join(TEMPLATE_ORIGIN))?;
    name_venv_in_activation_scripts(staging, Path::new(&origin), target)
}

/// The prompt the template is made with, replaced by the tier's name.
const TEMPLATE_PROMPT: &str = "tstore-template-prompt";
/// A file in the template naming the path it was created at.
const TEMPLATE_ORIGIN: &str = ".tstore-template-origin";

/// Makes the skeleton template for `interpreter` if the store has none,
/// so that a build started later does not wait for `uv venv`.
pub fn prepare_skeleton(uv: &Uv, store: &Store, interpreter: &Path) -> anyhow::Result<()> {
    skeleton_template(uv, store, interpreter).map(drop)
}

fn skeleton_template(uv: &Uv, store: &Store, interpreter: &Path) -> anyhow::Result<PathBuf> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"tstore-skeleton-1\0");
    for path in [uv.path.as_path(), interpreter] {
        let stamp = crate::interpreter::file_stamp(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        hasher.update(path.as_os_str().as_encoded_bytes());
        hasher.update(format!("\0{stamp}\0").as_bytes());
    }
    let template = store
        .skeletons_dir()
        .join(&hasher.finalize().to_hex()[..32]);
    if template.join(TEMPLATE_ORIGIN).is_file() {
        return Ok(template);
    }
    // Built in the store's tmp (same filesystem), so that gc removes what a
    // killed build leaves there like any other temp entry.
    let building = store.temp_path("skeleton");
    let made = run_uv_venv(uv, interpreter, &building, TEMPLATE_PROMPT).and_then(|()| {
        // uv's modes follow the umask; the store's do not.
        set_modes(&building)?;
        crate::fsinfo::write_with_mode(
            &building.join(TEMPLATE_ORIGIN),
            building.as_os_str().as_encoded_bytes(),
            FILE_MODE,
        )?;
        Ok(())
    });
    if let Err(err) = made {
        let _ = fs_err::remove_dir_all(&building);
        return Err(err);
    }
    // Another process may have published the same template meanwhile.
    if std::fs::rename(&building, &template).is_err() {
        let _ = fs_err::remove_dir_all(&building);
        if !template.join(TEMPLATE_ORIGIN).is_file() {
            bail!("cannot publish the venv skeleton at {}", template.display());
        }
    }
    Ok(template)
}

/// Gives every directory under `dir` (and `dir`) [`DIR_MODE`] and every file
/// [`FILE_MODE`] or, if executable, [`crate::fsinfo::EXEC_MODE`]; symlinks are left alone.
fn set_modes(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            set_modes(&entry.path())?;
        } else if kind.is_file() {
            let mode = file_mode_like(entry.metadata()?.permissions().mode());
            fs_err::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

fn run_uv_venv(uv: &Uv, interpreter: &Path, dir: &Path, prompt: &str) -> anyhow::Result<()> {
    let mut cmd = uv.command();
    cmd.args([
        "venv",
        "--quiet",
        "--no-project",
        "--prompt",
        prompt,
        "--python",
    ])
    .arg(interpreter)
    .arg(dir);
    uv.run(&mut cmd)
        .context("cannot create the venv skeleton")?;
    Ok(())
}

/// Copies the template to `staging`, naming `prompt` where the template
/// names its placeholder prompt.
fn copy_template(template: &Path, staging: &Path, prompt: &str) -> anyhow::Result<()> {
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let from = template.join(&relative);
        let to = staging.join(&relative);
        fs_err::create_dir(&to)?;
        fs_err::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(DIR_MODE))?;
        for entry in fs_err::read_dir(&from)? {
            let entry = entry?;
            let name = entry.file_name();
            if relative.as_os_str().is_empty() && name == TEMPLATE_ORIGIN {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(relative.join(&name));
            } else if kind.is_symlink() {
                std::os::unix::fs::symlink(fs_err::read_link(entry.path())?, to.join(&name))
                    .with_context(|| format!("cannot create {}", to.join(&name).display()))?;
            } else {
                let bytes = fs_err::read(entry.path())?;
                let bytes = match std::str::from_utf8(&bytes) {
                    Ok(text) if text.contains(TEMPLATE_PROMPT) => {
                        text.replace(TEMPLATE_PROMPT, prompt).into_bytes()
                    }
                    _ => bytes,
                };
                let mode =
                    std::os::unix::fs::PermissionsExt::mode(&entry.metadata()?.permissions());
                crate::fsinfo::write_with_mode(&to.join(&name), &bytes, file_mode_like(mode))?;
            }
        }
    }
    Ok(())
}

/// The shells whose activation script spells out the venv's path, and the
/// line of each that sets it. (`activate.ps1`, `activate.xsh` and
/// `activate_this.py` find the venv from their own location.)
const PATH_LINES: [(&str, Shell, &str); 5] = [
    ("activate", Shell::Posix, "VIRTUAL_ENV="),
    ("activate.csh", Shell::Csh, "setenv VIRTUAL_ENV "),
    ("activate.fish", Shell::Fish, "set -gx VIRTUAL_ENV "),
    ("activate.nu", Shell::Nu, "const virtual_env = "),
    ("activate.bat", Shell::Batch, "@for %%i in ("),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shell {
    Posix,
    Csh,
    Fish,
    Nu,
    Batch,
}

/// `path` as one word of `shell`'s language, standing for exactly `path`.
fn quote_for(shell: Shell, path: &str) -> String {
    match shell {
        // Inside single quotes nothing is special but the quote itself,
        // which is closed, given in double quotes, and reopened.
        Shell::Posix | Shell::Csh => format!("'{}'", path.replace('\'', r#"'"'"'"#)),
        Shell::Fish => format!("'{}'", path.replace('\\', r"\\").replace('\'', r"\'")),
        // A double-quoted nu string has backslash escapes and no interpolation.
        Shell::Nu => format!("\"{}\"", path.replace('\\', r"\\").replace('"', "\\\"")),
        // Only cmd.exe reads it, and a Windows path holds no `"`.
        Shell::Batch => format!("\"{path}\""),
    }
}

/// Sets the venv path of every activation script under `venv/bin` to
/// `target`, replacing the line that names where uv made them
/// (`made_at`). Fails, naming the script, where uv's script has no such
/// line or still names `made_at` afterwards, rather than leave an activation
/// script that points elsewhere.
fn name_venv_in_activation_scripts(
    venv: &Path,
    made_at: &Path,
    target: &Path,
) -> anyhow::Result<()> {
    let target_text = target
        .to_str()
        .filter(|t| !t.contains(char::is_control))
        .with_context(|| {
            format!(
                "the venv path {} cannot be written into activation scripts: \
                 use a path of UTF-8 text without control characters",
                target.display()
            )
        })?;
    let bin = venv.join("bin");
    for (file, shell, prefix) in PATH_LINES {
        let script = bin.join(file);
        let text = match fs_err::read_to_string(&script) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err.into()),
        };
        let mut found = 0;
        let mut out = String::with_capacity(text.len() + target_text.len());
        for line in text.split_inclusive('\n') {
            let indent = &line[..line.len() - line.trim_start().len()];
            let body = line.trim_start();
            let ending = &body[body.trim_end_matches(['\r', '\n']).len()..];
            let rewritten = match shell {
                Shell::Batch => body.strip_prefix(prefix).and_then(|rest| {
                    let (_, after) = rest.split_once(") do @set \"VIRTUAL_ENV=")?;
                    Some(format!(
                        "{prefix}{}) do @set \"VIRTUAL_ENV={after}",
                        quote_for(shell, target_text)
                    ))
                }),
                // Only the top-level assignment (others are indented).
                Shell::Posix | Shell::Csh | Shell::Fish if !indent.is_empty() => None,
                _ => body
                    .starts_with(prefix)
                    .then(|| format!("{prefix}{}{ending}", quote_for(shell, target_text))),
            };
            match rewritten {
                Some(new) => {
                    found += 1;
                    out.push_str(indent);
                    out.push_str(&new);
                }
                None => out.push_str(line),
            }
        }
        if found != 1 {
            bail!(
                "cannot set the venv path in {} (uv's script has {found} line(s) starting `{prefix}`, \
                 one expected): tstore does not know this uv's activation scripts",
                script.display()
            );
        }
        fs_err::write(&script, out)?;
    }
    // Its name is enough to find it, however a script quotes the path.
    let made_at_name = made_at.file_name().unwrap_or_default().as_encoded_bytes();
    for entry in fs_err::read_dir(&bin)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let bytes = fs_err::read(entry.path())?;
        if bytes.windows(made_at_name.len()).any(|w| w == made_at_name) {
            bail!(
                "{} still names {}, where uv made it: tstore does not know this uv's scripts",
                entry.path().display(),
                made_at.display()
            );
        }
    }
    Ok(())
}

/// Adds tstore's keys to `pyvenv.cfg`.
/// What a generation was built from, kept in its `pyvenv.cfg`.
pub struct Marker<'a> {
    /// Hash of the plan (every file and its source).
    pub plan: &'a str,
    /// Hash of the inputs tstore can read without uv (see `inputs_key`).
    pub inputs: &'a str,
    /// site-packages, relative to the venv.
    pub site_packages: &'a Path,
    /// Hash of the names directly in site-packages.
    pub entries: &'a str,
}

/// Adds tstore's keys to `pyvenv.cfg`.
pub fn write_marker(venv: &Path, marker: &Marker<'_>) -> anyhow::Result<()> {
    let cfg = venv.join("pyvenv.cfg");
    let mut text = fs_err::read_to_string(&cfg)?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "tstore = {}\n{PLAN_KEY} = {}\n{INPUTS_KEY} = {}\n{ENTRIES_KEY} = {} {}\n",
        env!("CARGO_PKG_VERSION"),
        marker.plan,
        marker.inputs,
        marker.site_packages.display(),
        marker.entries,
    ));
    fs_err::write(&cfg, text)?;
    Ok(())
}

fn recorded(venv: &Path, wanted: &str) -> Option<String> {
    let text = std::fs::read_to_string(venv.join("pyvenv.cfg")).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == wanted).then(|| value.trim().to_string())
    })
}

/// The plan hash recorded in a venv's `pyvenv.cfg`, if tstore built it.
pub fn recorded_plan(venv: &Path) -> Option<String> {
    recorded(venv, PLAN_KEY)
}

/// The inputs key recorded in a venv's `pyvenv.cfg`.
pub fn recorded_inputs(venv: &Path) -> Option<String> {
    recorded(venv, INPUTS_KEY)
}

/// The key a generation whose bytecode is not yet complete was built
/// with; `None` once it is complete (or for a venv built before).
pub fn bytecode_pending(venv: &Path) -> Option<String> {
    recorded(venv, BYTECODE_PENDING_KEY)
}

/// Marks a venv just built, usable but without all its bytecode: it keeps
/// no inputs key (so no run takes it for unchanged) and the pending key.
pub fn mark_bytecode_pending(venv: &Path, key: &str) -> anyhow::Result<()> {
    rewrite_keys(
        venv,
        &[(INPUTS_KEY, None), (BYTECODE_PENDING_KEY, Some(key))],
    )
}

/// Marks a venv's bytecode complete: it now holds everything of `plan`,
/// built from `inputs`.
pub fn mark_bytecode_complete(venv: &Path, plan: &str, inputs: &str) -> anyhow::Result<()> {
    rewrite_keys(
        venv,
        &[
            (BYTECODE_PENDING_KEY, None),
            (PLAN_KEY, Some(plan)),
            (INPUTS_KEY, Some(inputs)),
        ],
    )
}

/// Sets (`Some`) or removes (`None`) keys of `pyvenv.cfg`, written beside
/// and renamed over so that a reader never sees half a file.
fn rewrite_keys(venv: &Path, keys: &[(&str, Option<&str>)]) -> anyhow::Result<()> {
    let cfg = venv.join("pyvenv.cfg");
    let text = fs_err::read_to_string(&cfg)?;
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| {
            l.split_once('=')
                .is_none_or(|(k, _)| keys.iter().all(|(key, _)| k.trim() != *key))
        })
        .map(str::to_string)
        .collect();
    for (key, value) in keys {
        if let Some(value) = value {
            lines.push(format!("{key} = {value}"));
        }
    }
    let temp = venv.join(".pyvenv.cfg.tstore-tmp");
    crate::fsinfo::write_with_mode(&temp, (lines.join("\n") + "\n").as_bytes(), FILE_MODE)?;
    fs_err::rename(&temp, &cfg)?;
    Ok(())
}

/// Hash of a set of names in site-packages (order does not matter).
/// `__pycache__` is left out: tstore may link it and Python may create it,
/// and either way it says nothing about which packages are installed.
pub fn entries_hash<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = names.into_iter().filter(|n| *n != "__pycache__").collect();
    names.sort_unstable();
    let mut hasher = blake3::Hasher::new();
    for name in names {
        hasher.update(name.as_bytes()).update(b"\0");
    }
    hasher.finalize().to_hex()[..32].to_string()
}

/// Whether site-packages holds the same top-level names as when the venv
/// was built (one directory read).
pub fn entries_unchanged(venv: &Path) -> bool {
    let Some(value) = recorded(venv, ENTRIES_KEY) else {
        return false;
    };
    let Some((dir, expected)) = value.rsplit_once(' ') else {
        return false;
    };
    let Ok(entries) = std::fs::read_dir(venv.join(dir)) else {
        return false;
    };
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries_hash(names.iter().map(String::as_str)) == expected
}

/// Packages `tstore edit` made private in this venv.
pub fn edited_packages(venv: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(venv.join("pyvenv.cfg")) else {
        return Vec::new();
    };
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == EDITED_KEY).then(|| {
                value
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Records that `package` was made private in this venv.
pub fn mark_edited(venv: &Path, package: &str) -> anyhow::Result<()> {
    let mut edited = edited_packages(venv);
    if !edited.iter().any(|p| p == package) {
        edited.push(package.to_string());
    }
    let cfg = venv.join("pyvenv.cfg");
    let text = fs_err::read_to_string(&cfg)?;
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| {
            l.split_once('=')
                .is_none_or(|(k, _)| k.trim() != EDITED_KEY)
        })
        .map(str::to_string)
        .collect();
    lines.push(format!("{EDITED_KEY} = {}", edited.join(",")));
    // Written beside and renamed over: a reader never sees half a file.
    let temp = venv.join(".pyvenv.cfg.tstore-tmp");
    crate::fsinfo::write_with_mode(&temp, (lines.join("\n") + "\n").as_bytes(), FILE_MODE)?;
    fs_err::rename(&temp, &cfg)?;
    Ok(())
}

/// Swaps two paths in one step where the kernel can; false where it cannot.
pub fn exchange(a: &Path, b: &Path) -> anyhow::Result<bool> {
    Ok(crate::platform::exchange(a, b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shell_gets_its_own_quoting() {
        let path = r#"/v/it's "q" $x \ é"#;
        assert_eq!(quote_for(Shell::Posix, path), r#"'/v/it'"'"'s "q" $x \ é'"#);
        assert_eq!(quote_for(Shell::Csh, path), quote_for(Shell::Posix, path));
        assert_eq!(quote_for(Shell::Fish, path), r#"'/v/it\'s "q" $x \\ é'"#);
        assert_eq!(quote_for(Shell::Nu, path), r#""/v/it's \"q\" $x \\ é""#);
    }

    /// The lines of uv's scripts that name the venv, as uv 0.13 writes them.
    fn fake_bin(dir: &Path, made_at: &str) {
        let bin = dir.join("bin");
        fs_err::create_dir_all(&bin).unwrap();
        let files = [
            (
                "activate",
                format!(
                    "    unset VIRTUAL_ENV\nVIRTUAL_ENV='{made_at}'\n    VIRTUAL_ENV=$(cygpath -u \"$VIRTUAL_ENV\")\nexport VIRTUAL_ENV\n"
                ),
            ),
            (
                "activate.csh",
                format!("setenv VIRTUAL_ENV '{made_at}'\n    setenv VIRTUAL_ENV_PROMPT x\n"),
            ),
            (
                "activate.fish",
                format!("set -gx VIRTUAL_ENV '{made_at}'\r\n"),
            ),
            (
                "activate.nu",
                format!("export-env {{\n    const virtual_env = '{made_at}'\n}}\n"),
            ),
            (
                "activate.bat",
                format!("@for %%i in (\"{made_at}\") do @set \"VIRTUAL_ENV=%%~fi\"\n"),
            ),
            (
                "activate_this.py",
                "base = bin_dir[: -len(\"bin\") - 1]\n".to_string(),
            ),
        ];
        for (name, text) in files {
            fs_err::write(bin.join(name), text).unwrap();
        }
    }

    #[test]
    fn the_path_line_of_every_script_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let made_at = "/s/tmp/skeleton-1-abc";
        fake_bin(dir.path(), made_at);
        let target = Path::new("/home/o'neil/venvs/t");
        name_venv_in_activation_scripts(dir.path(), Path::new(made_at), target).unwrap();
        let read = |name: &str| fs_err::read_to_string(dir.path().join("bin").join(name)).unwrap();
        assert!(read("activate").contains("\nVIRTUAL_ENV='/home/o'\"'\"'neil/venvs/t'\n"));
        assert!(read("activate").contains("    VIRTUAL_ENV=$(cygpath"));
        assert!(
            read("activate.csh").starts_with("setenv VIRTUAL_ENV '/home/o'\"'\"'neil/venvs/t'\n")
        );
        assert_eq!(
            read("activate.fish"),
            "set -gx VIRTUAL_ENV '/home/o\\'neil/venvs/t'\r\n"
        );
        assert!(read("activate.nu").contains("    const virtual_env = \"/home/o'neil/venvs/t\"\n"));
        assert_eq!(
            read("activate.bat"),
            "@for %%i in (\"/home/o'neil/venvs/t\") do @set \"VIRTUAL_ENV=%%~fi\"\n"
        );
    }

    #[test]
    fn a_script_tstore_cannot_rewrite_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let made_at = "/s/tmp/skeleton-1-abc";
        fake_bin(dir.path(), made_at);
        let target = Path::new("/v/t");
        // A path line in a form tstore does not know.
        fs_err::write(
            dir.path().join("bin/activate.fish"),
            format!("set --global --export VIRTUAL_ENV '{made_at}'\n"),
        )
        .unwrap();
        let err = name_venv_in_activation_scripts(dir.path(), Path::new(made_at), target)
            .unwrap_err()
            .to_string();
        assert!(err.contains("activate.fish"), "{err}");
        // Another script naming where it was made.
        fake_bin(dir.path(), made_at);
        fs_err::write(dir.path().join("bin/activate.xsh"), made_at).unwrap();
        let err = name_venv_in_activation_scripts(dir.path(), Path::new(made_at), target)
            .unwrap_err()
            .to_string();
        assert!(err.contains("activate.xsh"), "{err}");
        // A path no script can hold.
        fake_bin(dir.path(), made_at);
        let err = name_venv_in_activation_scripts(
            dir.path(),
            Path::new(made_at),
            Path::new("/v/new\nline"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("control characters"), "{err}");
    }
}
