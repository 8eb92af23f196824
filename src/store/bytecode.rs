//! Bytecode compiled once per source and interpreter, kept as store objects.
//!
//! Every `.py` of a tier's distributions that has no entry for the
//! interpreter's tag (cache tag and magic number) is compiled by that
//! interpreter into a PEP 552 *checked-hash* pyc: its header holds a hash of
//! the source instead of an mtime, so it is valid for every link, reflink or
//! copy of the source, and Python still notices an edited source (it then
//! compiles that file itself, as it would in any venv). The code object's
//! file name is fixed by Python at load time, so one pyc serves every venv
//! path. A source that does not compile (a Python 2 file or a template
//! shipped in a wheel) is recorded as such and not tried again.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::db::{Bytecode, EMPTY_SOURCE};
use super::{ObjectKey, Store};
use crate::progress::Progress;

/// The worker: compiles each `source<TAB>pyc<TAB>display name` line of the
/// file it is given, printing `ok` or `fail` per line as it goes.
const COMPILE: &str = r#"
import py_compile, sys
mode = py_compile.PycInvalidationMode.CHECKED_HASH
with open(sys.argv[1], encoding="utf-8") as jobs:
    for line in jobs:
        source, pyc, name = line.rstrip("\n").split("\t")
        try:
            py_compile.compile(source, cfile=pyc, dfile=name, doraise=True, invalidation_mode=mode)
            print("ok", flush=True)
        except Exception:
            print("fail", flush=True)
"#;

/// Sources per worker below which starting another interpreter is not worth it.
const MIN_BATCH: usize = 64;

/// Compiles `sources` (a source's object key, or [`EMPTY_SOURCE`], with its
/// path in the wheel for messages) with the interpreter at `python`, whose
/// bytecode tag is `tag`; records the outcome in the store and returns it
/// per source.
pub fn compile(
    store: &Store,
    python: &Path,
    tag: &str,
    sources: &[(String, String)],
    progress: &dyn Progress,
) -> anyhow::Result<HashMap<String, Bytecode>> {
    if sources.is_empty() {
        return Ok(HashMap::new());
    }
    let work = store.temp_path("bytecode");
    fs_err::create_dir_all(&work)?;
    let result = compile_into(store, python, tag, sources, &work, progress);
    let _ = fs_err::remove_dir_all(&work);
    result
}

fn compile_into(
    store: &Store,
    python: &Path,
    tag: &str,
    sources: &[(String, String)],
    work: &Path,
    progress: &dyn Progress,
) -> anyhow::Result<HashMap<String, Bytecode>> {
    let jobs = plan_jobs(store, sources, work)?;
    progress.start("compiling bytecode", jobs.len() as u64, 0);
    let outcomes = run_workers(python, &jobs, work, progress)?;
    progress.finish();
    let mut entries = Vec::with_capacity(jobs.len());
    for ((job, ok), (source, _)) in jobs.iter().zip(outcomes).zip(sources) {
        let pyc = if ok {
            Some(store_pyc(store, &job.1)?)
        } else {
            None
        };
        entries.push((source.clone(), pyc));
    }
    store.db.record_bytecode(tag, &entries)?;
    Ok(entries
        .into_iter()
        .map(|(source, pyc)| {
            let state = match pyc {
                Some((key, _)) => Bytecode::Object(key),
                None => Bytecode::DoesNotCompile,
            };
            (source, state)
        })
        .collect())
}

/// One job per source: the file to compile, the pyc to write, the name
/// shown in messages.
fn plan_jobs<'a>(
    store: &Store,
    sources: &'a [(String, String)],
    work: &Path,
) -> anyhow::Result<Vec<(PathBuf, PathBuf, &'a str)>> {
    let empty_source = work.join("empty.py");
    fs_err::write(&empty_source, b"")?;
    sources
        .iter()
        .enumerate()
        .map(|(i, (source, path))| -> anyhow::Result<_> {
            let source_path = if source == EMPTY_SOURCE {
                empty_source.clone()
            } else {
                let key = ObjectKey::parse(source)
                    .with_context(|| format!("bad object key `{source}` in the store index"))?;
                store.object_path(&key)
            };
            Ok((source_path, work.join(format!("{i}.pyc")), path.as_str()))
        })
        .collect()
}

/// Splits `jobs` among a few interpreters running at once; returns whether
/// each job compiled, in order.
fn run_workers(
    python: &Path,
    jobs: &[(PathBuf, PathBuf, &str)],
    work: &Path,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<bool>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(jobs.len().div_ceil(MIN_BATCH))
        .max(1);
    let chunk = jobs.len().div_ceil(workers);
    let outcomes: Vec<Vec<bool>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .enumerate()
            .map(|(n, batch)| {
                scope.spawn(move || {
                    run_worker(python, &work.join(format!("jobs-{n}")), batch, progress)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a compile worker panicked"))
            })
            .collect::<anyhow::Result<_>>()
    })?;
    Ok(outcomes.into_iter().flatten().collect())
}

/// Publishes a compiled pyc as a store object (once per content); returns
/// its key and size.
fn store_pyc(store: &Store, pyc: &Path) -> anyhow::Result<(ObjectKey, u64)> {
    let bytes = fs_err::read(pyc)?;
    let key = ObjectKey {
        hash: *blake3::hash(&bytes).as_bytes(),
        executable: false,
    };
    if !store.object_path(&key).exists() {
        super::ingest::publish_object(store, pyc, &key)?;
    }
    Ok((key, bytes.len() as u64))
}

/// One interpreter compiling `batch`; returns whether each job compiled.
fn run_worker(
    python: &Path,
    jobs_file: &Path,
    batch: &[(PathBuf, PathBuf, &str)],
    progress: &dyn Progress,
) -> anyhow::Result<Vec<bool>> {
    let mut text = String::new();
    for (source, pyc, name) in batch {
        let line = format!("{}\t{}\t{name}", source.display(), pyc.display());
        if line.matches('\t').count() != 2 || line.contains('\n') {
            bail!("cannot compile `{name}`: tab or newline in its name");
        }
        text.push_str(&line);
        text.push('\n');
    }
    fs_err::File::create(jobs_file)?.write_all(text.as_bytes())?;
    // stderr goes to a file: a worker blocked on a full pipe would never finish.
    let errors = jobs_file.with_extension("err");
    let (mut child, started) = crate::process::spawn(
        crate::process::dies_with_parent(&mut Command::new(python))
            .args(["-I", "-W", "ignore", "-c", COMPILE])
            .arg(jobs_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs_err::File::create(&errors)?.into_parts().0),
    )
    .with_context(|| format!("cannot run {}", python.display()))?;
    let mut outcomes = Vec::with_capacity(batch.len());
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            outcomes.push(line? == "ok");
            progress.item_done("");
        }
    }
    let status = child.wait()?;
    started.ended(&status);
    if !status.success() || outcomes.len() != batch.len() {
        let stderr = std::fs::read_to_string(&errors).unwrap_or_default();
        bail!(
            "{} stopped while compiling bytecode ({status}, {} of {} files done): {}",
            python.display(),
            outcomes.len(),
            batch.len(),
            stderr.trim()
        );
    }
    Ok(outcomes)
}
