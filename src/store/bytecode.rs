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
//!
//! A [`Compiler`] takes sources as they become known: a fetch hands it each
//! wheel's sources as soon as the wheel is in the store, so compiling runs
//! while other wheels still download (a new store's staged wheels are
//! recorded only once the stage is moved in, after the last download, and
//! compiled once the venv is usable). Those interpreters run at a lower
//! priority, so the downloads, unpacking and linking that the venv waits
//! for keep the CPU they need; what is left when nothing else runs is
//! theirs. Once the run waits for the bytecode itself, interpreters at the
//! normal priority join them (a niceness cannot be lowered again without
//! privileges), so a busy machine does not starve the rest of the compile.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, bail};

use super::db::{Bytecode, EMPTY_SOURCE, FileRow, Pyc};
use super::wheel::{data_prefix, imports_from_site_packages};
use super::{Layout, ObjectKey, Store};
use crate::progress::Progress;

/// The worker: compiles each `source<TAB>pyc<TAB>display name` line it reads
/// into a PEP 552 checked-hash pyc, the bytes `py_compile` writes, and
/// answers per line `ok`, `fail` (the source does not compile: a fact about
/// the source, recorded so that it is not tried again) or
/// `error <errno> <why>` (reading the source or writing its pyc failed: a
/// fact about this run, such as a full disk or a damaged store, never
/// recorded, so the next run tries again).
///
/// It writes the pyc itself because `py_compile` writes through an
/// unbuffered file that ignores a short write: on a full disk it returns
/// success with the pyc cut short (seen with CPython 3.11), which every
/// venv would then share and fail to import. A buffered write retries and
/// raises `OSError` instead; the partial file is removed.
const WORKER: &str = r#"
import importlib.util, marshal, os, sys
checked_hash = (0b11).to_bytes(4, "little")
for line in sys.stdin:
    source, pyc, name = line.rstrip("\n").split("\t")
    try:
        with open(source, "rb") as file:
            data = file.read()
        try:
            code = compile(data, name, "exec", dont_inherit=True)
        except Exception:
            print("fail", flush=True)
            continue
        out = importlib.util.MAGIC_NUMBER + checked_hash + importlib.util.source_hash(data)
        try:
            with open(pyc, "wb") as file:
                file.write(out)
                file.write(marshal.dumps(code))
        except BaseException:
            try:
                os.unlink(pyc)
            except OSError:
                pass
            raise
        print("ok", flush=True)
    except Exception as error:
        errno = getattr(error, "errno", None) or 0
        print("error", errno, " ".join(str(error).split()), flush=True)
"#;

/// Sources per interpreter below which starting another is not worth it.
const MIN_BATCH: usize = 64;

/// How much the compiling interpreters yield to the rest of the run.
const NICENESS: i32 = 10;

/// The `.py` files of one distribution (`name`, its `rows` from the store)
/// that Python imports from site-packages and that have no bytecode entry
/// yet: (source object key or [`EMPTY_SOURCE`], path in the wheel).
pub fn sources_to_compile(name: &str, rows: &[FileRow]) -> anyhow::Result<Vec<(String, String)>> {
    let data_prefix = data_prefix(name, rows)?;
    Ok(rows
        .iter()
        .filter(|row| {
            row.bytecode == Bytecode::Unknown
                && row.path.ends_with(".py")
                && imports_from_site_packages(&row.path, &data_prefix)
        })
        .map(|row| (row.bytecode_source(), row.path.clone()))
        .collect())
}

/// Interpreters compiling submitted sources: in the background as they are
/// submitted ([`Compiler::in_background`]), else only once
/// [`Compiler::finish`] waits for them. Dropping it unfinished stops them.
pub struct Compiler {
    python: PathBuf,
    tag: String,
    layout: Layout,
    work: PathBuf,
    stop: Arc<AtomicBool>,
    /// Whether [`Compiler::submit`] starts (niced) interpreters.
    background: bool,
    state: Mutex<State>,
}

struct State {
    /// Every source submitted, by job number: its key and path in the wheel.
    sources: Vec<(String, String)>,
    seen: HashSet<String>,
    jobs: Option<Sender<Job>>,
    queue: Arc<Mutex<Receiver<Job>>>,
    /// Kept to hand to new workers; dropped when finishing, so that the
    /// results end when the last worker does.
    results_to: Option<Sender<Done>>,
    results: Receiver<Done>,
    /// Outcomes received so far, by job number; `recorded` of them are in
    /// the index.
    done: Vec<(usize, Pyc)>,
    /// Sources that could not be read or whose pyc could not be written.
    errors: Vec<SourceError>,
    recorded: usize,
    workers: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// How many sources a compiler has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub compiled: usize,
    /// Sources that do not compile.
    pub failed: usize,
}

impl Tally {
    /// Counts the outcomes [`Compiler::finish`] returned.
    pub fn of(outcomes: &HashMap<String, Bytecode>) -> Self {
        let failed = outcomes
            .values()
            .filter(|b| **b == Bytecode::DoesNotCompile)
            .count();
        Self {
            compiled: outcomes.len() - failed,
            failed,
        }
    }
}

struct Job {
    number: usize,
    source: PathBuf,
    name: String,
}

/// A job's outcome: its pyc in the store, `None` when it does not compile,
/// or why it could not be compiled this time.
struct Done {
    number: usize,
    pyc: Result<Pyc, SourceError>,
}

/// A source whose reading, or whose pyc's writing, failed: nothing is
/// recorded for it. The cause is the interpreter's `OSError` as an
/// [`std::io::Error`] where it gave an errno, so that a full disk is
/// recognized as one.
#[derive(Debug, thiserror::Error)]
#[error("cannot compile `{name}` ({source_path}): {message}")]
pub struct SourceError {
    name: String,
    source_path: String,
    message: String,
    #[source]
    cause: std::io::Error,
}

impl SourceError {
    /// From the worker's `<errno> <message>` after `error `.
    fn parse(job: &Job, answer: &str) -> Self {
        let (errno, message) = answer.split_once(' ').unwrap_or((answer, ""));
        let cause = match errno.parse::<i32>() {
            Ok(errno) if errno > 0 => std::io::Error::from_raw_os_error(errno),
            _ => std::io::Error::other(message.to_string()),
        };
        Self {
            name: job.name.clone(),
            source_path: job.source.display().to_string(),
            message: message.to_string(),
            cause,
        }
    }
}

impl State {
    fn take(&mut self, done: Done) {
        match done.pyc {
            Ok(pyc) => self.done.push((done.number, pyc)),
            Err(why) => self.errors.push(why),
        }
    }
}

impl Compiler {
    /// A compiler that starts compiling at [`Compiler::finish`].
    pub fn new(store: &Store, python: &Path, tag: &str) -> Self {
        Self::with_background(store, python, tag, false)
    }

    /// A compiler that starts compiling, at a lower priority, as sources
    /// are submitted.
    pub fn in_background(store: &Store, python: &Path, tag: &str) -> Self {
        Self::with_background(store, python, tag, true)
    }

    fn with_background(store: &Store, python: &Path, tag: &str, background: bool) -> Self {
        let (jobs, queue) = channel();
        let (results_to, results) = channel();
        Self {
            python: python.to_path_buf(),
            tag: tag.to_string(),
            layout: Layout::clone(store),
            work: store.temp_path("bytecode"),
            stop: Arc::new(AtomicBool::new(false)),
            background,
            state: Mutex::new(State {
                sources: Vec::new(),
                seen: HashSet::new(),
                jobs: Some(jobs),
                queue: Arc::new(Mutex::new(queue)),
                results_to: Some(results_to),
                results,
                done: Vec::new(),
                errors: Vec::new(),
                recorded: 0,
                workers: Vec::new(),
            }),
        }
    }

    /// The bytecode tag compiled for.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Queues `sources` (a source's object key, or [`EMPTY_SOURCE`], with its
    /// path in the wheel for messages); a source already submitted is
    /// skipped. In the background, starts another interpreter when the
    /// queue has grown enough.
    pub fn submit(&self, sources: &[(String, String)]) -> anyhow::Result<()> {
        let mut state = self.state.lock().unwrap();
        if state.sources.is_empty() && !sources.is_empty() {
            fs_err::create_dir_all(&self.work)?;
            fs_err::write(self.work.join("empty.py"), b"")?;
        }
        for (source, name) in sources {
            if !state.seen.insert(source.clone()) {
                continue;
            }
            if name.contains(['\t', '\n']) {
                bail!("cannot compile `{name}`: tab or newline in its name");
            }
            let job = Job {
                number: state.sources.len(),
                source: self.source_path(source)?,
                name: name.clone(),
            };
            state.sources.push((source.clone(), name.clone()));
            if let Some(jobs) = &state.jobs {
                jobs.send(job).ok();
            }
        }
        let wanted = if self.background {
            workers_for(state.sources.len())
        } else {
            0
        };
        while state.workers.len() < wanted {
            self.start_worker(&mut state, NICENESS);
        }
        Ok(())
    }

    /// Records in the index what has compiled so far, so that a venv built
    /// now links those pycs; returns how much that is.
    pub fn record_finished(&self, store: &Store) -> anyhow::Result<Tally> {
        let mut state = self.state.lock().unwrap();
        while let Ok(done) = state.results.try_recv() {
            state.take(done);
        }
        self.record(store, &mut state)?;
        let failed = state.done.iter().filter(|(_, pyc)| pyc.is_none()).count();
        Ok(Tally {
            compiled: state.done.len() - failed,
            failed,
        })
    }

    /// Waits until every submitted source is compiled, records the outcomes
    /// and returns them per source. A source that could not be read, or
    /// whose pyc could not be written, makes it an error, after the others
    /// are recorded.
    pub fn finish(
        &self,
        store: &Store,
        progress: &dyn Progress,
    ) -> anyhow::Result<HashMap<String, Bytecode>> {
        let mut state = self.state.lock().unwrap();
        while let Ok(done) = state.results.try_recv() {
            state.take(done);
        }
        let remaining = state.sources.len() - state.done.len() - state.errors.len();
        for _ in 0..workers_for(remaining) {
            self.start_worker(&mut state, 0);
        }
        state.jobs = None;
        state.results_to = None;
        if remaining > 0 {
            progress.start("compiling bytecode", remaining as u64, 0);
            while let Ok(done) = state.results.recv() {
                state.take(done);
                progress.item_done("");
            }
            progress.finish();
        }
        let failures: Vec<anyhow::Error> = std::mem::take(&mut state.workers)
            .into_iter()
            .filter_map(|worker| match worker.join() {
                Ok(result) => result.err(),
                Err(_) => Some(anyhow::anyhow!("a compile worker panicked")),
            })
            .collect();
        // What compiled is kept whatever happened to the rest.
        self.record(store, &mut state)?;
        if !state.errors.is_empty() {
            let (count, total) = (state.errors.len(), state.sources.len());
            let first = state.errors.swap_remove(0);
            return Err(anyhow::Error::new(first).context(format!(
                "bytecode: {count} of {total} files could not be compiled (nothing is recorded \
                 for them; the next run tries them again); the first"
            )));
        }
        if state.done.len() < state.sources.len() {
            let cause = failures
                .into_iter()
                .next()
                .unwrap_or_else(|| anyhow::anyhow!("no interpreter was left to compile"));
            return Err(cause.context(format!(
                "bytecode: {} of {} files done",
                state.done.len(),
                state.sources.len()
            )));
        }
        Ok(state
            .done
            .iter()
            .map(|(number, pyc)| {
                let bytecode = match pyc {
                    Some((key, _)) => Bytecode::Object(*key),
                    None => Bytecode::DoesNotCompile,
                };
                (state.sources[*number].0.clone(), bytecode)
            })
            .collect())
    }

    fn record(&self, store: &Store, state: &mut State) -> anyhow::Result<()> {
        if state.recorded == state.done.len() {
            return Ok(());
        }
        let entries: Vec<(String, Pyc)> = state.done[state.recorded..]
            .iter()
            .map(|(number, pyc)| (state.sources[*number].0.clone(), *pyc))
            .collect();
        store.db.record_bytecode(&self.tag, &entries)?;
        state.recorded = state.done.len();
        Ok(())
    }

    fn source_path(&self, source: &str) -> anyhow::Result<PathBuf> {
        if source == EMPTY_SOURCE {
            return Ok(self.work.join("empty.py"));
        }
        let key = ObjectKey::parse(source)
            .with_context(|| format!("bad object key `{source}` in the store index"))?;
        Ok(self.layout.object_path(&key))
    }

    fn start_worker(&self, state: &mut State, niceness: i32) {
        let Some(results) = state.results_to.clone() else {
            return;
        };
        let worker = Worker {
            python: self.python.clone(),
            layout: self.layout.clone(),
            work: self.work.clone(),
            number: state.workers.len(),
            niceness,
            queue: Arc::clone(&state.queue),
            results,
            stop: Arc::clone(&self.stop),
        };
        state.workers.push(std::thread::spawn(move || worker.run()));
    }
}

impl Drop for Compiler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        state.jobs = None;
        for worker in std::mem::take(&mut state.workers) {
            let _ = worker.join();
        }
        let _ = fs_err::remove_dir_all(&self.work);
    }
}

/// One interpreter and the thread feeding it jobs from the shared queue.
struct Worker {
    python: PathBuf,
    layout: Layout,
    work: PathBuf,
    number: usize,
    niceness: i32,
    queue: Arc<Mutex<Receiver<Job>>>,
    results: Sender<Done>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(self) -> anyhow::Result<()> {
        // stderr goes to a file: a worker blocked on a full pipe would never finish.
        let errors = self.work.join(format!("worker-{}.err", self.number));
        let (mut child, started) = crate::process::spawn(
            crate::process::dies_with_parent(&mut Command::new(&self.python))
                .args(["-I", "-W", "ignore", "-c", WORKER])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(fs_err::File::create(&errors)?.into_parts().0),
        )
        .with_context(|| format!("cannot run {}", self.python.display()))?;
        if self.niceness != 0 {
            // Only a preference: compiling at the normal priority is still right.
            let _ = crate::platform::set_niceness(child.id(), self.niceness);
        }
        let served = match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => self.serve(stdin, BufReader::new(stdout)),
            _ => Err(anyhow::anyhow!("no pipes to the interpreter")),
        };
        let status = child.wait()?;
        started.ended(&status);
        served.with_context(|| {
            let stderr = std::fs::read_to_string(&errors).unwrap_or_default();
            let said = match stderr.trim() {
                "" => String::new(),
                text => format!(": {text}"),
            };
            format!(
                "compiling bytecode with {} ({status}){said}",
                self.python.display()
            )
        })
    }

    /// Hands the interpreter one job at a time until the queue is closed
    /// and empty, or the compiler is dropped.
    fn serve(
        &self,
        mut stdin: ChildStdin,
        mut stdout: BufReader<ChildStdout>,
    ) -> anyhow::Result<()> {
        let mut answer = String::new();
        while !self.stop.load(Ordering::Relaxed) {
            let next = self.queue.lock().unwrap().recv();
            let Ok(job) = next else {
                return Ok(());
            };
            let pyc = self.work.join(format!("{}.pyc", job.number));
            writeln!(
                stdin,
                "{}\t{}\t{}",
                job.source.display(),
                pyc.display(),
                job.name
            )?;
            stdin.flush()?;
            answer.clear();
            if stdout.read_line(&mut answer)? == 0 {
                bail!("the interpreter ended before compiling `{}`", job.name);
            }
            let pyc = match answer.trim_end() {
                "ok" => Ok(Some(store_pyc(&self.layout, &pyc)?)),
                "fail" => Ok(None),
                other => Err(SourceError::parse(
                    &job,
                    other.strip_prefix("error ").unwrap_or(other),
                )),
            };
            self.results
                .send(Done {
                    number: job.number,
                    pyc,
                })
                .ok();
        }
        Ok(())
    }
}

/// Interpreters worth starting for `jobs` sources: one per core at most.
fn workers_for(jobs: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(jobs.div_ceil(MIN_BATCH))
}

/// Publishes a compiled pyc as a store object (once per content); returns
/// its key and size.
pub(super) fn store_pyc(layout: &Layout, pyc: &Path) -> anyhow::Result<(ObjectKey, u64)> {
    let bytes = fs_err::read(pyc)?;
    let key = ObjectKey {
        hash: *blake3::hash(&bytes).as_bytes(),
        executable: false,
    };
    if layout.object_path(&key).exists() {
        let _ = fs_err::remove_file(pyc);
    } else {
        super::ingest::publish_object(layout, pyc, &key)?;
    }
    Ok((key, bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use std::time::{Duration, Instant};

    const TAG: &str = "test-tag";

    /// A source file as a store object; returns its key.
    fn source(store: &Store, text: &str) -> String {
        let key = ObjectKey {
            hash: *blake3::hash(text.as_bytes()).as_bytes(),
            executable: false,
        };
        let staged = store.temp_path("source");
        fs_err::write(&staged, text).unwrap();
        super::super::ingest::publish_object(store, &staged, &key).unwrap();
        key.to_string()
    }

    fn python() -> PathBuf {
        PathBuf::from("python3")
    }

    fn is_checked_hash_pyc(store: &Store, bytecode: &Bytecode) -> bool {
        let Bytecode::Object(key) = bytecode else {
            return false;
        };
        let bytes = fs_err::read(store.object_path(key)).unwrap();
        bytes.len() > 8 && bytes[4..8] == [3, 0, 0, 0]
    }

    #[test]
    fn sources_submitted_in_several_batches_are_each_compiled_once_and_recorded() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let a = source(&store, "A = 1\n");
        let b = source(&store, "def f():\n    return 2\n");
        let broken = source(&store, "def (:\n");
        let compiler = Compiler::new(&store, &python(), TAG);
        compiler
            .submit(&[
                (a.clone(), "pkg/a.py".into()),
                (b.clone(), "pkg/b.py".into()),
            ])
            .unwrap();
        // Later batches repeat a source (another wheel ships the same file).
        compiler
            .submit(&[
                (a.clone(), "other/a.py".into()),
                (EMPTY_SOURCE.into(), "pkg/__init__.py".into()),
                (broken.clone(), "pkg/broken.py".into()),
            ])
            .unwrap();
        let compiled = compiler.finish(&store, &Silent).unwrap();
        assert_eq!(compiled.len(), 4, "{compiled:?}");
        for key in [&a, &b, &EMPTY_SOURCE.to_string()] {
            assert!(is_checked_hash_pyc(&store, &compiled[key]), "{key}");
        }
        assert_eq!(compiled[&broken], Bytecode::DoesNotCompile);
        // The very bytes py_compile writes for the same source and name.
        let Bytecode::Object(pyc) = &compiled[&b] else {
            panic!("b did not compile");
        };
        let reference = home.path().join("reference.pyc");
        let made = std::process::Command::new(python())
            .args(["-c", "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], dfile='pkg/b.py', doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)"])
            .arg(store.object_path(&ObjectKey::parse(&b).unwrap()))
            .arg(&reference)
            .status()
            .unwrap();
        assert!(made.success());
        assert_eq!(
            fs_err::read(store.object_path(pyc)).unwrap(),
            fs_err::read(&reference).unwrap()
        );
        let rows = store.db.bytecode_of(&[a, broken]).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.tag == TAG));
        assert!(rows[0].pyc.is_some() != rows[1].pyc.is_some());
    }

    #[test]
    fn a_source_that_cannot_be_read_is_an_error_and_never_recorded_as_not_compiling() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let good = source(&store, "A = 1\n");
        let broken = source(&store, "def (:\n");
        // An object the index names but the disk lacks (a damaged store),
        // between sources that compile and do not.
        let gone = source(&store, "GONE = 1\n");
        fs_err::remove_file(store.object_path(&ObjectKey::parse(&gone).unwrap())).unwrap();
        let compiler = Compiler::new(&store, &python(), TAG);
        compiler
            .submit(&[
                (gone.clone(), "pkg/gone.py".into()),
                (good.clone(), "pkg/good.py".into()),
                (broken.clone(), "pkg/broken.py".into()),
            ])
            .unwrap();
        let message = format!("{:#}", compiler.finish(&store, &Silent).unwrap_err());
        assert!(
            message.contains("1 of 3 files could not be compiled")
                && message.contains("pkg/gone.py")
                && message.contains("No such file"),
            "{message}"
        );
        // The others were compiled and recorded, the unreadable one not at
        // all, so that a run after the repair compiles it.
        let recorded = store.db.bytecode_of(&[good, broken, gone.clone()]).unwrap();
        assert_eq!(recorded.len(), 2, "{recorded:?}");
        assert!(store.db.bytecode_of(&[gone]).unwrap().is_empty());
    }

    #[test]
    fn what_has_compiled_is_recorded_before_the_rest_is_done() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let quick = source(&store, "QUICK = 1\n");
        let compiler = Compiler::in_background(&store, &python(), TAG);
        compiler
            .submit(&[(quick.clone(), "quick.py".into())])
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while store
            .db
            .bytecode_of(std::slice::from_ref(&quick))
            .unwrap()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "never recorded");
            std::thread::sleep(Duration::from_millis(20));
            compiler.record_finished(&store).unwrap();
        }
        let compiled = compiler.finish(&store, &Silent).unwrap();
        assert!(is_checked_hash_pyc(&store, &compiled[&quick]));
    }

    #[test]
    fn a_compiler_dropped_unfinished_stops_and_leaves_no_scratch() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let sources: Vec<(String, String)> = (0..200)
            .map(|i| (source(&store, &format!("X = {i}\n")), format!("m{i}.py")))
            .collect();
        let compiler = Compiler::in_background(&store, &python(), TAG);
        compiler.submit(&sources).unwrap();
        let work = compiler.work.clone();
        assert!(work.is_dir());
        let dropped = Instant::now();
        drop(compiler);
        assert!(!work.exists());
        assert!(dropped.elapsed() < Duration::from_secs(10));
        // Nothing was recorded as compiled or as failing.
        let keys: Vec<String> = sources.into_iter().map(|(k, _)| k).collect();
        let recorded = store.db.bytecode_of(&keys).unwrap();
        assert!(recorded.is_empty(), "{} recorded", recorded.len());
    }
}
