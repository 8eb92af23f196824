//! Pycs Python wrote itself, on import in a venv, taken into the store.
//!
//! A tier with `compile-bytecode = "lazy"` links only the pycs the store
//! has; Python writes the others beside their sources as modules are first
//! imported, in each venv on its own. Such a pyc is as good for every other
//! link of the same source, so the store keeps one. It is taken only after
//! the venv's own interpreter has checked it against the source beside it,
//! as Python does before using a pyc (its magic number, then the source's
//! mtime and size, or the source's hash), and it is kept as the store's own
//! pycs are: a checked-hash pyc, valid for any link or copy of the source.
//! Only the 16-byte header is rewritten; the code object is Python's own.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, bail};

use super::bytecode::store_pyc;
use super::db::Pyc;
use super::{Layout, ObjectKey, Store};

/// Prints the interpreter's cache tag and magic number, then checks and
/// rewrites each `source<TAB>pyc<TAB>out` line it reads, answering `ok`
/// (a checked-hash pyc is at `out`) or `stale`.
const CONVERTER: &str = r#"
import importlib.util, marshal, os, sys
magic = importlib.util.MAGIC_NUMBER
print(sys.implementation.cache_tag, magic.hex(), flush=True)
def valid(data, source, text):
    if len(data) < 16 or data[:4] != magic:
        return False
    flags = int.from_bytes(data[4:8], "little")
    if flags == 0:
        st = os.stat(source)
        return (int.from_bytes(data[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
                and int.from_bytes(data[12:16], "little") == st.st_size & 0xFFFFFFFF)
    return flags & 1 == 1 and data[8:16] == importlib.util.source_hash(text)
for line in sys.stdin:
    source, pyc, out = line.rstrip("\n").split("\t")
    try:
        with open(source, "rb") as f:
            text = f.read()
        with open(pyc, "rb") as f:
            data = f.read()
        if not valid(data, source, text):
            raise ValueError("stale")
        marshal.loads(data[16:])
        with open(out, "wb") as f:
            f.write(magic + (3).to_bytes(4, "little") + importlib.util.source_hash(text) + data[16:])
        print("ok", flush=True)
    except Exception:
        print("stale", flush=True)
"#;

/// One interpreter checking and converting pycs written by its own kind,
/// and what it took so far. Dropping it ends the interpreter.
pub struct PycTaker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    cache_tag: String,
    tag: String,
    layout: Layout,
    work: PathBuf,
    taken: Vec<(String, Pyc)>,
}

impl PycTaker {
    /// Starts `python` (a venv's interpreter) to check pycs for it.
    pub fn start(store: &Store, python: &Path) -> anyhow::Result<Self> {
        let work = store.temp_path("written-pycs");
        fs_err::create_dir_all(&work)?;
        let mut child = crate::process::dies_with_parent(&mut Command::new(python))
            .args(["-I", "-B", "-c", CONVERTER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {}", python.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("no pipes to {}", python.display());
        };
        let mut taker = Self {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            cache_tag: String::new(),
            tag: String::new(),
            layout: Layout::clone(store),
            work,
            taken: Vec::new(),
        };
        let header = taker.answer()?;
        let Some((cache_tag, magic)) = header.split_once(' ') else {
            bail!("{} gave no cache tag: `{header}`", python.display());
        };
        if cache_tag == "None" {
            bail!("{} writes no pycs (no cache tag)", python.display());
        }
        taker.cache_tag = cache_tag.to_string();
        taker.tag = format!("{cache_tag}-{magic}");
        Ok(taker)
    }

    /// The interpreter's cache tag (`cpython-311`), as in pyc file names.
    pub fn cache_tag(&self) -> &str {
        &self.cache_tag
    }

    /// The store's bytecode tag for this interpreter (cache tag and magic).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Takes `pyc`, written by Python for `source` (the store source
    /// `source_key`, linked or copied in the venv), into the store; `None`
    /// when it does not match the source (it is then left alone).
    pub fn take(
        &mut self,
        source_key: &str,
        source: &Path,
        pyc: &Path,
    ) -> anyhow::Result<Option<(ObjectKey, u64)>> {
        let out = self.work.join(format!("{}.pyc", self.taken.len()));
        let line = [source, pyc, &out].map(|p| p.display().to_string());
        if line.iter().any(|p| p.contains(['\t', '\n'])) {
            return Ok(None);
        }
        let stdin = self.stdin.as_mut().context("the pyc checker has ended")?;
        writeln!(stdin, "{}", line.join("\t"))?;
        stdin.flush()?;
        if self.answer()? != "ok" {
            return Ok(None);
        }
        let stored = store_pyc(&self.layout, &out)?;
        self.taken.push((source_key.to_string(), Some(stored)));
        Ok(Some(stored))
    }

    /// Records what was taken in the index (so gc keeps each pyc while its
    /// source is used) and ends the interpreter; returns how many.
    pub fn finish(mut self, store: &Store) -> anyhow::Result<usize> {
        store.db.record_bytecode(&self.tag, &self.taken)?;
        self.stdin = None;
        self.child.wait()?;
        Ok(self.taken.len())
    }

    fn answer(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the interpreter checking pycs ended early");
        }
        Ok(line.trim_end().to_string())
    }
}

impl Drop for PycTaker {
    fn drop(&mut self) {
        self.stdin = None;
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = fs_err::remove_dir_all(&self.work);
    }
}
