//! Files that differ per venv and so are written, never linked: console and
//! GUI launchers from `entry_points.txt`, and `.data/scripts` whose
//! `#!python` line must name the venv's interpreter.

use std::path::Path;

use crate::store::wheel::EntryPoint;

/// Linux limits a `#!` line to 127 bytes; longer or space-holding paths get
/// the `/bin/sh` trampoline pip and uv use too.
const MAX_SHEBANG: usize = 127;

/// The first line(s) that make a script run with `python`.
///
/// The trampoline is read by sh and by Python: sh runs its second line,
/// where Python sees the start of a `'''` string closed on the third. The
/// path is single-quoted for sh, each `'` in it written `'"'"'`, so no
/// character is special to sh and no `'''` ends Python's string early.
pub fn shebang(python: &Path) -> String {
    let python = python.display().to_string();
    if python.len() + 3 > MAX_SHEBANG || python.contains([' ', '\t']) {
        let quoted = format!("'{}'", python.replace('\'', r#"'"'"'"#));
        format!("#!/bin/sh\n'''exec' {quoted} \"$0\" \"$@\"\n' '''\n")
    } else {
        format!("#!{python}\n")
    }
}

/// A launcher for one entry point.
pub fn launcher(entry: &EntryPoint, python: &Path) -> Vec<u8> {
    let body = match &entry.attr {
        Some(attr) => {
            let head = attr.split('.').next().unwrap_or(attr);
            format!(
                "import re\nimport sys\nfrom {module} import {head}\nif __name__ == \"__main__\":\n    \
                 sys.argv[0] = re.sub(r\"(-script\\.pyw|\\.exe)?$\", \"\", sys.argv[0])\n    \
                 sys.exit({attr}())\n",
                module = entry.module,
            )
        }
        None => format!(
            "import runpy\nif __name__ == \"__main__\":\n    runpy.run_module(\"{}\", run_name=\"__main__\")\n",
            entry.module
        ),
    };
    format!("{}# -*- coding: utf-8 -*-\n{body}", shebang(python)).into_bytes()
}

/// Rewrites a `#!python` / `#!pythonw` first line to the venv's interpreter;
/// other scripts are returned unchanged.
pub fn rewrite_script(content: &[u8], python: &Path) -> Vec<u8> {
    let first_end = content
        .iter()
        .position(|&b| b == b'\n')
        .map_or(content.len(), |i| i + 1);
    let first = &content[..first_end];
    let is_python_shebang = first.starts_with(b"#!python")
        && first[8..]
            .iter()
            .take_while(|b| !b.is_ascii_whitespace())
            .all(|b| b"w".contains(b));
    if !is_python_shebang {
        return content.to_vec();
    }
    let mut out = shebang(python).into_bytes();
    out.extend_from_slice(&content[first_end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_rewrites_only_python_lines() {
        let py = Path::new("/v/bin/python");
        assert_eq!(
            rewrite_script(b"#!python\nprint(1)\n", py),
            b"#!/v/bin/python\nprint(1)\n"
        );
        assert_eq!(
            rewrite_script(b"#!pythonw\nx\n", py),
            b"#!/v/bin/python\nx\n"
        );
        assert_eq!(
            rewrite_script(b"#!/bin/sh\necho\n", py),
            b"#!/bin/sh\necho\n"
        );
        assert_eq!(
            rewrite_script(b"#!python3.11-foo\n", py),
            b"#!python3.11-foo\n"
        );
    }

    #[test]
    fn long_interpreter_paths_use_the_sh_trampoline() {
        let long = format!("/{}/bin/python", "x".repeat(130));
        assert!(shebang(Path::new(&long)).starts_with("#!/bin/sh\n"));
        assert!(shebang(Path::new("/with space/python")).starts_with("#!/bin/sh\n"));
        assert_eq!(
            shebang(Path::new("/a ''b'' $c/python")),
            "#!/bin/sh\n'''exec' '/a '\"'\"''\"'\"'b'\"'\"''\"'\"' $c/python' \"$0\" \"$@\"\n' '''\n"
        );
    }

    #[test]
    fn launcher_imports_the_attribute_head() {
        let ep = EntryPoint {
            name: "x".into(),
            module: "pkg.cli".into(),
            attr: Some("App.run".into()),
            gui: false,
        };
        let text = String::from_utf8(launcher(&ep, Path::new("/v/bin/python"))).unwrap();
        assert!(text.starts_with("#!/v/bin/python\n"));
        assert!(text.contains("from pkg.cli import App\n"));
        assert!(text.contains("sys.exit(App.run())"));
    }
}
