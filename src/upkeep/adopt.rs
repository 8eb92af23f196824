//! `tstore adopt`: existing venvs (made by pip or uv) keep working exactly as
//! they are, but each installed file becomes a link to a store object, so
//! identical files across venvs, and with tiers, occupy disk once.
//!
//! Only files an installed distribution's RECORD lists are touched, and
//! only when their content still matches the RECORD's hash (where it has
//! one): user edits, caches and anything unrecorded are left alone and
//! reported. Each file is replaced atomically (a link made beside it, then
//! renamed over it), so a kill leaves every file either old or new. The
//! venvs and their objects are recorded, so gc keeps those objects while the
//! venv exists.
//!
//! Hardlinks make the file the read-only store object (mode 0444/0555, the
//! object's modification time; the venv's timestamp pycs are updated to
//! match, so Python does not recompile). Reflinks keep the file's own inode,
//! mode and modification time. With neither (store and venv on different
//! filesystems) nothing can be saved, and adopt refuses.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rayon::prelude::*;
use serde::Serialize;
use sha2::Digest;

use crate::config::LinkMode;
use crate::failures::Failures;
use crate::fsinfo;
use crate::link::{LinkMethod, Linker};
use crate::progress::Progress;
use crate::store::{ObjectKey, Store};

#[derive(Debug, Clone, Default)]
pub struct AdoptOptions {
    /// Report what would be linked and saved; change nothing.
    pub dry_run: bool,
    pub link_mode: LinkMode,
}

/// What adopting one venv did (or would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct AdoptReport {
    pub venv: PathBuf,
    pub dry_run: bool,
    pub method: Option<LinkMethod>,
    pub distributions: usize,
    /// Recorded files replaced by links to store objects.
    pub files_linked: usize,
    /// Their total size.
    pub bytes_linked: u64,
    /// Files already linked to their store object (an earlier adopt).
    pub already_linked: usize,
    /// Blocks freed: replaced files no other link held, whose content the
    /// store had already (for a dry run: would have).
    pub bytes_freed: u64,
    /// Bytes of replaced files that had other links too (a uv cache, say):
    /// freed only once those links go.
    pub bytes_linked_elsewhere: u64,
    /// Growth of the filesystem's free space over the real run.
    pub measured_free_growth: Option<i64>,
    /// Recorded files whose content no longer matches RECORD (left alone).
    pub modified: Vec<PathBuf>,
    /// Files in site-packages or bin/ that no RECORD lists (left alone).
    pub unrecorded: Vec<PathBuf>,
    pub unrecorded_bytes: u64,
    /// RECORD entries that are missing, not regular files, or point outside
    /// the venv (left alone).
    pub skipped: Vec<String>,
}

/// A recorded file that may become a link.
struct Candidate {
    path: PathBuf,
    key: ObjectKey,
    size: u64,
    allocated: u64,
    links: u64,
    inode: (u64, u64),
    mode: u32,
    modified: std::time::SystemTime,
    /// RECORD gives its hash (its content must not change).
    hashed: bool,
}

/// Adopts the venv at `venv` into `store`. `planned` carries, across the
/// venvs of one run, the objects earlier venvs stored (or, in a dry run,
/// would have) with their modification time in seconds.
pub fn adopt(
    store: &Store,
    venv: &Path,
    options: &AdoptOptions,
    planned: &mut HashMap<ObjectKey, i64>,
    progress: &dyn Progress,
) -> anyhow::Result<AdoptReport> {
    if options.link_mode == LinkMode::Copy {
        bail!(
            "--link-mode copy would save nothing: adopt replaces files by links to the store. \
             Use auto, reflink or hardlink"
        );
    }
    let venv = check_venv(venv)?;
    let mut report = AdoptReport {
        venv: venv.clone(),
        dry_run: options.dry_run,
        ..AdoptReport::default()
    };
    let linker = choose_linker(store, &venv, options)?;
    report.method = Some(linker.method());

    let recorded = read_records(&venv, &mut report)?;
    let candidates = inspect_recorded(&venv, &recorded, &mut report, progress);
    // Sources first: with hardlinks a `.py` takes its object's modification
    // time, which the venv's timestamp pycs must then name (see
    // `retimed_pycs`); the pycs are linked after that.
    let (pycs, sources): (Vec<Candidate>, Vec<Candidate>) =
        candidates.into_iter().partition(is_cached_bytecode);
    let free_before = fsinfo::free_bytes(&venv).ok();
    let mut linking = Linking {
        store,
        linker: &linker,
        venv: &venv,
        dry_run: options.dry_run,
        planned,
        progress,
        objects: Vec::new(),
        errors: Failures::default(),
        new_times: HashMap::new(),
    };
    linking.link("linking", sources, &mut report);
    let pycs = retimed_pycs(
        pycs,
        &linking.new_times,
        options.dry_run,
        &mut linking.errors,
    );
    linking.link("linking bytecode of", pycs, &mut report);
    let Linking {
        objects, errors, ..
    } = linking;

    if !options.dry_run {
        // Recorded even after a partial failure: the files linked so far
        // keep their objects alive.
        store
            .db
            .record_adopted(&venv.display().to_string(), &objects)?;
        report.measured_free_growth = free_before.and_then(|before| {
            fsinfo::free_bytes(&venv)
                .ok()
                .map(|after| after as i64 - before as i64)
        });
    }
    errors.into_result(|failed| {
        format!(
            "{}: {failed} file group(s) could not be linked and were left as they were",
            venv.display()
        )
    })?;
    Ok(report)
}

/// How files will be linked, refusing (but for a dry run) when the store
/// cannot share files with the venv.
fn choose_linker(store: &Store, venv: &Path, options: &AdoptOptions) -> anyhow::Result<Linker> {
    let probe = Linker::probe(options.link_mode, store, venv)?;
    if probe.linker.method() == LinkMethod::Copy && !options.dry_run {
        bail!(
            "{}: the store ({}) cannot share files with this venv ({}), so adopting would save \
             nothing. Put the store on the venv's filesystem (TSTORE_HOME) and run adopt again",
            venv.display(),
            store.location().display(),
            probe.fallback_reason.unwrap_or_default()
        );
    }
    Ok(probe.linker)
}

/// The files the venv's RECORDs list, with what they say of each; counts the
/// distributions and reports the files no RECORD lists.
fn read_records(venv: &Path, report: &mut AdoptReport) -> anyhow::Result<Vec<Recorded>> {
    let (recorded, distributions) = recorded_files(venv, report)?;
    report.distributions = distributions;
    report.unrecorded = unrecorded_files(venv, &recorded);
    report.unrecorded_bytes = report
        .unrecorded
        .iter()
        .filter_map(|p| fs_err::symlink_metadata(p).ok())
        .map(|m| m.len())
        .sum();
    Ok(recorded)
}

/// Reads every recorded file in parallel: those still as RECORD says become
/// candidates; changed ones are reported as modified, unreadable ones as
/// skipped.
fn inspect_recorded(
    venv: &Path,
    recorded: &[Recorded],
    report: &mut AdoptReport,
    progress: &dyn Progress,
) -> Vec<Candidate> {
    progress.start(
        &format!("reading {}", venv.display()),
        recorded.len() as u64,
        0,
    );
    let modified = Mutex::new(Vec::new());
    let skipped = Mutex::new(Vec::new());
    let candidates: Vec<Candidate> = recorded
        .par_iter()
        .filter_map(|(path, hash)| {
            let result = inspect(venv, path, hash.as_ref());
            progress.item_done("");
            match result {
                Ok(Some(candidate)) => Some(candidate),
                Ok(None) => {
                    modified.lock().unwrap().push(path.clone());
                    None
                }
                Err(err) => {
                    skipped
                        .lock()
                        .unwrap()
                        .push(format!("{}: {err:#}", path.display()));
                    None
                }
            }
        })
        .collect();
    progress.finish();
    report.modified = modified.into_inner().unwrap();
    report.modified.sort();
    let mut skipped = skipped.into_inner().unwrap();
    skipped.sort();
    report.skipped.extend(skipped);
    candidates
}

/// One object per content: the files of each content, by object key.
fn group_by_content(files: Vec<Candidate>) -> BTreeMap<ObjectKey, Vec<Candidate>> {
    let mut groups: BTreeMap<ObjectKey, Vec<Candidate>> = BTreeMap::new();
    for candidate in files {
        groups.entry(candidate.key).or_default().push(candidate);
    }
    groups
}

/// Linking a venv's files to store objects, in passes (sources, then
/// bytecode), with what the passes found so far.
struct Linking<'a> {
    store: &'a Store,
    linker: &'a Linker,
    venv: &'a Path,
    dry_run: bool,
    /// Objects stored (or, dry, to be stored) by earlier venvs and passes.
    planned: &'a mut HashMap<ObjectKey, i64>,
    progress: &'a dyn Progress,
    /// Every object the venv's files now are, for the store's record.
    objects: Vec<(String, u64)>,
    /// Groups that could not be linked (left as they were).
    errors: Failures,
    /// `.py` files a hardlink gave a new modification time: (before, after).
    new_times: HashMap<PathBuf, (u32, u32)>,
}

impl Linking<'_> {
    /// One pass: makes each content group of `files` links to its object.
    /// Files that already are it stay; the store provides the rest, or the
    /// first file of a group becomes it.
    fn link(&mut self, label: &str, files: Vec<Candidate>, report: &mut AdoptReport) {
        let groups = group_by_content(files);
        self.progress.start(
            &format!("{label} {}", self.venv.display()),
            groups.len() as u64,
            0,
        );
        let planned_before: &HashMap<ObjectKey, i64> = self.planned;
        let outcomes: Vec<anyhow::Result<GroupOutcome>> = groups
            .into_par_iter()
            .map(|(key, files)| {
                let outcome = adopt_group(
                    self.store,
                    self.linker,
                    key,
                    files,
                    self.dry_run,
                    planned_before.get(&key).copied(),
                );
                self.progress.item_done("");
                outcome
            })
            .collect();
        self.progress.finish();
        for outcome in outcomes {
            match outcome {
                Ok(group) => self.count(group, report),
                Err(err) => self.errors.push(err),
            }
        }
    }

    /// Adds a linked group to the report and remembers its object.
    fn count(&mut self, group: GroupOutcome, report: &mut AdoptReport) {
        report.files_linked += group.linked;
        report.bytes_linked += group.bytes_linked;
        report.already_linked += group.already;
        report.bytes_freed += group.freed;
        report.bytes_linked_elsewhere += group.elsewhere;
        if self.linker.method() == LinkMethod::Hardlink {
            for (path, before) in group.sources {
                if before != group.object_mtime as u32 {
                    self.new_times
                        .insert(path, (before, group.object_mtime as u32));
                }
            }
        }
        self.planned.insert(group.object, group.object_mtime);
        self.objects.push((group.key, group.size));
    }
}

/// The venv's absolute path, after checking it is one tstore may adopt.
fn check_venv(venv: &Path) -> anyhow::Result<PathBuf> {
    let absolute =
        fs_err::canonicalize(venv).with_context(|| format!("{} does not exist", venv.display()))?;
    if !absolute.join("pyvenv.cfg").is_file() {
        bail!(
            "{} is not a virtual environment (it has no pyvenv.cfg); give the venv's top folder",
            venv.display()
        );
    }
    if crate::materialize::venv::recorded_plan(&absolute).is_some() {
        bail!(
            "{} was built by tstore (a tier's generation); its files are store links already",
            venv.display()
        );
    }
    Ok(absolute)
}

/// `lib/python*/site-packages` (and `lib64`'s, when it is another folder).
fn site_packages_dirs(venv: &Path) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    let mut dirs = Vec::new();
    for lib in ["lib", "lib64"] {
        let Ok(entries) = fs_err::read_dir(venv.join(lib)) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("python"))
            .map(|e| e.path().join("site-packages"))
            .filter(|p| p.is_dir())
            .collect();
        found.sort();
        for dir in found {
            if let Ok(real) = fs_err::canonicalize(&dir)
                && seen.insert(real.clone())
            {
                dirs.push(real);
            }
        }
    }
    dirs
}

/// A file some RECORD lists (absolute, inside the venv), with the hash
/// RECORD gives for it: (algorithm, urlsafe base64 digest).
type Recorded = (PathBuf, Option<(String, String)>);

/// Every file some RECORD lists, and how many distributions there are.
fn recorded_files(venv: &Path, report: &mut AdoptReport) -> anyhow::Result<(Vec<Recorded>, usize)> {
    let mut files: BTreeMap<PathBuf, Option<(String, String)>> = BTreeMap::new();
    let mut distributions = 0;
    for site in site_packages_dirs(venv) {
        let mut dist_infos: Vec<PathBuf> = fs_err::read_dir(&site)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "dist-info"))
            .collect();
        dist_infos.sort();
        for dist_info in dist_infos {
            let record_path = dist_info.join("RECORD");
            let Ok(text) = fs_err::read_to_string(&record_path) else {
                report
                    .skipped
                    .push(format!("{}: no RECORD", dist_info.display()));
                continue;
            };
            let entries = match crate::store::wheel::parse_record(&text) {
                Ok(entries) => entries,
                Err(err) => {
                    report.skipped.push(format!(
                        "{}: unreadable, so its files were left alone ({err})",
                        record_path.display()
                    ));
                    continue;
                }
            };
            distributions += 1;
            for entry in entries {
                let path = lexical_join(&site, &entry.path);
                if path == record_path {
                    continue;
                }
                if !path.starts_with(venv) {
                    report.skipped.push(format!(
                        "{}: `{}` points outside the venv",
                        record_path.display(),
                        entry.path
                    ));
                    continue;
                }
                files.insert(path, entry.hash);
            }
        }
    }
    Ok((files.into_iter().collect(), distributions))
}

/// `base` joined with a RECORD path, `..` applied without touching the disk.
fn lexical_join(base: &Path, relative: &str) -> PathBuf {
    let mut out = base.to_path_buf();
    for component in Path::new(relative).components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            // An absolute RECORD path: keep it as written, so the
            // inside-the-venv check judges it.
            Component::RootDir => out = PathBuf::from("/"),
            Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Files in site-packages and bin/ that no RECORD lists.
fn unrecorded_files(venv: &Path, recorded: &[Recorded]) -> Vec<PathBuf> {
    let known: HashSet<&Path> = recorded.iter().map(|(p, _)| p.as_path()).collect();
    let mut all = Vec::new();
    for site in site_packages_dirs(venv) {
        fsinfo::walk_files(&site, &mut all);
    }
    let mut out: Vec<PathBuf> = all
        .into_iter()
        .filter(|p| !known.contains(p.as_path()))
        .filter(|p| p.file_name().is_none_or(|n| n != "RECORD"))
        .collect();
    out.sort();
    out
}

/// Reads a recorded file: `Ok(None)` when its content no longer matches
/// RECORD, an error when it is missing, not a regular file, or reached
/// through a symlink that leads out of `venv`.
fn inspect(
    venv: &Path,
    path: &Path,
    hash: Option<&(String, String)>,
) -> anyhow::Result<Option<Candidate>> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("listed in RECORD but missing"),
        _ => e.into(),
    })?;
    if !meta.file_type().is_file() {
        bail!("not a regular file");
    }
    let parent = path.parent().context("a file has a parent folder")?;
    if !fs_err::canonicalize(parent)?.starts_with(venv) {
        bail!("its folder leads outside the venv through a symlink");
    }
    let mut digest: Option<Box<dyn sha2::digest::DynDigest>> = match hash {
        None => None,
        Some((algo, _)) => Some(match algo.as_str() {
            "sha256" => Box::new(sha2::Sha256::new()),
            "sha384" => Box::new(sha2::Sha384::new()),
            "sha512" => Box::new(sha2::Sha512::new()),
            // A hash tstore cannot check: treat the file as changed.
            _ => return Ok(None),
        }),
    };
    let mut blake = blake3::Hasher::new();
    let mut file = fs_err::File::open(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        blake.update(&buf[..n]);
        if let Some(d) = digest.as_mut() {
            d.update(&buf[..n]);
        }
    }
    if let (Some(d), Some((_, expected))) = (digest, hash)
        && URL_SAFE_NO_PAD.encode(d.finalize()) != expected.trim_end_matches('=')
    {
        return Ok(None);
    }
    let mode = meta.permissions().mode();
    Ok(Some(Candidate {
        path: path.to_path_buf(),
        key: ObjectKey {
            hash: *blake.finalize().as_bytes(),
            executable: mode & 0o111 != 0,
        },
        size: meta.len(),
        allocated: fsinfo::allocated(&meta),
        links: meta.nlink(),
        inode: (meta.dev(), meta.ino()),
        mode,
        modified: meta.modified()?,
        hashed: hash.is_some(),
    }))
}

struct GroupOutcome {
    object: ObjectKey,
    /// Modification time (seconds) of the object the files now share.
    object_mtime: i64,
    /// The `.py` files linked, with their modification time before.
    sources: Vec<(PathBuf, u32)>,
    key: String,
    size: u64,
    linked: usize,
    bytes_linked: u64,
    already: usize,
    freed: u64,
    elsewhere: u64,
}

/// Makes every file of one content a link to its object. `planned`: a dry
/// run already counted the object as stored by an earlier venv.
fn adopt_group(
    store: &Store,
    linker: &Linker,
    key: ObjectKey,
    files: Vec<Candidate>,
    dry_run: bool,
    planned: Option<i64>,
) -> anyhow::Result<GroupOutcome> {
    let object = store.object_path(&key);
    let size = files[0].size;
    let sources: Vec<(PathBuf, u32)> = files
        .iter()
        .filter(|f| f.path.extension().is_some_and(|e| e == "py"))
        .map(|f| (f.path.clone(), unix_seconds(f.modified) as u32))
        .collect();
    let mut outcome = GroupOutcome {
        object: key,
        object_mtime: 0,
        sources,
        key: key.to_string(),
        size,
        linked: 0,
        bytes_linked: 0,
        already: 0,
        freed: 0,
        elsewhere: 0,
    };
    let stored = fs_err::metadata(&object).ok();
    let object_inode = stored.as_ref().map(|m| (m.dev(), m.ino()));
    outcome.object_mtime = match (&stored, planned) {
        (Some(meta), _) => meta.mtime(),
        (None, Some(mtime)) if dry_run => mtime,
        // The first file becomes the object, keeping its time.
        _ => unix_seconds(files[0].modified),
    };
    let mut files = files.into_iter();
    if object_inode.is_none() && !(dry_run && planned.is_some()) {
        // The first file's content becomes the object: nothing is freed for
        // it. A file with no other link becomes the object itself when
        // hardlinking; one shared with something else (a uv cache) is
        // copied, so the store never shares an inode it does not own.
        let first = files.next().expect("a group has a file");
        let adopt_inode = linker.method() == LinkMethod::Hardlink && first.links == 1;
        if !dry_run {
            publish_from(store, &first, &key, adopt_inode)?;
            if !adopt_inode {
                replace_with_link(linker, &object, &first)?;
            }
        }
        outcome.linked += 1;
        outcome.bytes_linked += first.size;
    }
    for file in files {
        if Some(file.inode) == object_inode {
            outcome.already += 1;
            continue;
        }
        if !dry_run {
            replace_with_link(linker, &object, &file)?;
        }
        outcome.linked += 1;
        outcome.bytes_linked += file.size;
        // Both a hardlink and a reflink free the file's own blocks, unless
        // another link still holds them.
        if file.links > 1 {
            outcome.elsewhere += file.allocated;
        } else {
            outcome.freed += file.allocated;
        }
    }
    if !dry_run {
        store.db.record_object(&outcome.key, size)?;
    }
    Ok(outcome)
}

fn unix_seconds(time: std::time::SystemTime) -> i64 {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// `__pycache__/*.pyc`, whose validity depends on its source's mtime.
fn is_cached_bytecode(file: &Candidate) -> bool {
    file.path.extension().is_some_and(|e| e == "pyc")
        && file
            .path
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "__pycache__")
}

/// The `.py` a `__pycache__/NAME.TAG.pyc` was compiled from.
fn pyc_source(pyc: &Path) -> Option<PathBuf> {
    let name = pyc.file_name()?.to_str()?;
    let stem = name.strip_suffix(".pyc")?;
    let (module, _tag) = stem.rsplit_once('.')?;
    Some(pyc.parent()?.parent()?.join(format!("{module}.py")))
}

/// Timestamp pycs (PEP 552 flags 0) record their source's mtime and size.
/// A source that now has its object's mtime would make the venv's pyc
/// stale, and Python would recompile it; so a pyc that was valid for the
/// source's old time gets the new time written into its header (the code
/// is the same), atomically. (It stays unlike other venvs' pycs of the same
/// source: compiled code names its source's absolute path.) Pycs whose
/// RECORD has a hash, and pycs already stale, are kept as they are.
fn retimed_pycs(
    pycs: Vec<Candidate>,
    new_times: &HashMap<PathBuf, (u32, u32)>,
    dry_run: bool,
    errors: &mut Failures,
) -> Vec<Candidate> {
    let mut out = Vec::with_capacity(pycs.len());
    for mut pyc in pycs {
        let retime = (|| -> anyhow::Result<()> {
            if pyc.hashed {
                return Ok(());
            }
            let Some(source) = pyc_source(&pyc.path) else {
                return Ok(());
            };
            let Some(&(before, after)) = new_times.get(&source) else {
                return Ok(());
            };
            let source_size = fs_err::metadata(&source)?.len() as u32;
            let mut bytes = fs_err::read(&pyc.path)?;
            let field = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
            if bytes.len() < 16 || field(4) != 0 || field(8) != before || field(12) != source_size {
                return Ok(());
            }
            bytes[8..12].copy_from_slice(&after.to_le_bytes());
            pyc.key.hash = *blake3::hash(&bytes).as_bytes();
            if !dry_run {
                let temp = pyc.path.with_extension(format!(
                    "pyc.tstore-adopt-{}",
                    crate::store::unique_suffix()
                ));
                fs_err::write(&temp, &bytes)?;
                fs_err::set_permissions(&temp, std::fs::Permissions::from_mode(pyc.mode & 0o7777))?;
                fs_err::rename(&temp, &pyc.path).inspect_err(|_| {
                    let _ = std::fs::remove_file(&temp);
                })?;
                let meta = fs_err::metadata(&pyc.path)?;
                pyc.links = meta.nlink();
                pyc.inode = (meta.dev(), meta.ino());
                pyc.allocated = fsinfo::allocated(&meta);
                pyc.modified = meta.modified()?;
            }
            Ok(())
        })();
        match retime {
            Ok(()) => out.push(pyc),
            Err(err) => errors.push_described(
                format!(
                    "{}: cannot update its source time: {err:#}",
                    pyc.path.display()
                ),
                err,
            ),
        }
    }
    out
}

/// Puts `file`'s content into the store as object `key`: the file's own
/// inode when `adopt_inode`, else a reflink or copy of it; re-hashed after
/// staging, so a file changed since it was read never becomes an object.
fn publish_from(
    store: &Store,
    file: &Candidate,
    key: &ObjectKey,
    adopt_inode: bool,
) -> anyhow::Result<()> {
    let staged = store.temp_path("adopt");
    if adopt_inode {
        fs_err::hard_link(&file.path, &staged)?;
    } else {
        reflink_copy::reflink_or_copy(&file.path, &staged)
            .with_context(|| format!("cannot copy {} into the store", file.path.display()))?;
    }
    let publish = || -> anyhow::Result<()> {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(fs_err::File::open(&staged)?)?;
        if *hasher.finalize().as_bytes() != key.hash {
            bail!(
                "{} changed while it was being adopted; it was left as it is",
                file.path.display()
            );
        }
        crate::store::ingest::publish_object(store, &staged, key)
    };
    publish().inspect_err(|_| {
        let _ = std::fs::remove_file(&staged);
    })
}

/// Replaces `file` by a link to `object`, atomically: the link is made
/// beside it under a temporary name, then renamed over it.
fn replace_with_link(linker: &Linker, object: &Path, file: &Candidate) -> anyhow::Result<()> {
    let dir = file.path.parent().context("a file has a parent folder")?;
    let name = file.path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(
        ".{name}.tstore-adopt-{}",
        crate::store::unique_suffix()
    ));
    let result = (|| -> anyhow::Result<()> {
        linker.link(object, &temp, file.key.executable)?;
        if linker.method() != LinkMethod::Hardlink {
            // A private inode: keep what the file had, so timestamp-checked
            // pycs of a linked .py stay valid.
            fs_err::set_permissions(&temp, std::fs::Permissions::from_mode(file.mode & 0o7777))?;
            std::fs::File::options()
                .write(true)
                .open(&temp)?
                .set_modified(file.modified)?;
        }
        fs_err::rename(&temp, &file.path)?;
        Ok(())
    })();
    result
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })
        .with_context(|| format!("cannot link {}", file.path.display()))
}

/// Adopted venvs recorded in the store, with whether each still exists.
pub fn adopted_venvs(store: &Store) -> anyhow::Result<Vec<(String, bool)>> {
    Ok(store
        .db
        .adopted_venvs()?
        .into_iter()
        .map(|path| {
            let exists = Path::new(&path).join("pyvenv.cfg").is_file();
            (path, exists)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(digest: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(digest)
    }

    /// A venv made by another installer: one distribution whose RECORD
    /// lists two files of one content, a file edited since, a script with a
    /// sha512, and an entry pointing outside the venv; plus a stray file.
    struct Fixture {
        dir: tempfile::TempDir,
        venv: PathBuf,
        site: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let venv = fs_err::canonicalize(dir.path()).unwrap().join("venv");
            let site = venv.join("lib/python3.12/site-packages");
            fs_err::create_dir_all(site.join("pkg")).unwrap();
            fs_err::create_dir_all(site.join("pkg-1.0.dist-info")).unwrap();
            fs_err::create_dir_all(venv.join("bin")).unwrap();
            fs_err::write(venv.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
            let same = b"print('same')\n";
            fs_err::write(site.join("pkg/a.py"), same).unwrap();
            fs_err::write(site.join("pkg/b.py"), same).unwrap();
            fs_err::write(site.join("pkg/c.txt"), b"edited\n").unwrap();
            fs_err::write(site.join("pkg-1.0.dist-info/METADATA"), b"Name: pkg\n").unwrap();
            fs_err::write(venv.join("bin/tool"), b"#!/bin/sh\n").unwrap();
            fs_err::write(site.join("stray.txt"), b"mine\n").unwrap();
            let sha256 = b64(&sha2::Sha256::digest(same));
            let sha512 = b64(&sha2::Sha512::digest(b"#!/bin/sh\n"));
            let original = b64(&sha2::Sha256::digest(b"original\n"));
            fs_err::write(
                site.join("pkg-1.0.dist-info/RECORD"),
                format!(
                    "pkg/a.py,sha256={sha256},14\npkg/b.py,sha256={sha256},14\n\
                     pkg/c.txt,sha256={original},9\npkg-1.0.dist-info/METADATA,,\n\
                     ../../../bin/tool,sha512={sha512},10\n../../../../outside,,\n\
                     pkg-1.0.dist-info/RECORD,,\n"
                ),
            )
            .unwrap();
            Self { dir, venv, site }
        }
    }

    #[test]
    fn files_of_one_content_become_one_object() {
        let fx = Fixture::new();
        let store = Store::open(&fx.dir.path().join("store")).unwrap();
        let report = adopt(
            &store,
            &fx.venv,
            &AdoptOptions::default(),
            &mut HashMap::new(),
            &crate::progress::Silent,
        )
        .unwrap();
        assert_eq!(report.distributions, 1);
        // a.py, b.py, METADATA and bin/tool; c.txt no longer matches RECORD.
        assert_eq!(report.files_linked, 4);
        assert_eq!(report.modified, [fx.site.join("pkg/c.txt")]);
        assert_eq!(report.unrecorded, [fx.site.join("stray.txt")]);
        assert_eq!(report.unrecorded_bytes, 5);
        assert!(
            report
                .skipped
                .iter()
                .any(|s| s.contains("points outside the venv")),
            "{:?}",
            report.skipped
        );
        let mut objects = Vec::new();
        fsinfo::walk_files(&store.objects_dir(), &mut objects);
        assert_eq!(objects.len(), 3, "{objects:?}");
        let inode = |p: &Path| fs_err::metadata(p).unwrap().ino();
        if report.method == Some(LinkMethod::Hardlink) {
            assert_eq!(
                inode(&fx.site.join("pkg/a.py")),
                inode(&fx.site.join("pkg/b.py"))
            );
        }
        assert_eq!(
            fs_err::read(fx.site.join("pkg/c.txt")).unwrap(),
            b"edited\n"
        );

        // Adopting again finds every file linked already.
        let again = adopt(
            &store,
            &fx.venv,
            &AdoptOptions::default(),
            &mut HashMap::new(),
            &crate::progress::Silent,
        )
        .unwrap();
        assert_eq!(again.files_linked, 0);
        if report.method == Some(LinkMethod::Hardlink) {
            assert_eq!(again.already_linked, 4);
        }
    }

    #[test]
    fn a_dry_run_counts_and_changes_nothing() {
        let fx = Fixture::new();
        let store = Store::open(&fx.dir.path().join("store")).unwrap();
        let before = fs_err::metadata(fx.site.join("pkg/b.py")).unwrap().ino();
        let report = adopt(
            &store,
            &fx.venv,
            &AdoptOptions {
                dry_run: true,
                ..AdoptOptions::default()
            },
            &mut HashMap::new(),
            &crate::progress::Silent,
        )
        .unwrap();
        assert_eq!(report.files_linked, 4);
        // The second copy of a content would free its blocks; the first
        // becomes the object.
        assert!(report.bytes_freed > 0);
        let after = fs_err::metadata(fx.site.join("pkg/b.py")).unwrap().ino();
        assert_eq!(before, after);
        let mut objects = Vec::new();
        fsinfo::walk_files(&store.objects_dir(), &mut objects);
        assert!(objects.is_empty(), "{objects:?}");
    }

    #[test]
    fn each_record_hash_algorithm_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let venv = fs_err::canonicalize(dir.path()).unwrap();
        let path = venv.join("f");
        fs_err::write(&path, b"content").unwrap();
        let check = |algo: &str, digest: String| {
            inspect(&venv, &path, Some(&(algo.to_string(), digest)))
                .unwrap()
                .is_some()
        };
        assert!(check("sha256", b64(&sha2::Sha256::digest(b"content"))));
        assert!(check("sha384", b64(&sha2::Sha384::digest(b"content"))));
        assert!(check("sha512", b64(&sha2::Sha512::digest(b"content"))));
        // RECORDs written with padding match too.
        assert!(check(
            "sha256",
            format!("{}=", b64(&sha2::Sha256::digest(b"content")))
        ));
        assert!(!check("sha256", b64(&sha2::Sha256::digest(b"other"))));
        assert!(!check("sha384", b64(&sha2::Sha256::digest(b"content"))));
        // A hash tstore cannot check counts as changed.
        assert!(!check("md5", "x".to_string()));
        let unhashed = inspect(&venv, &path, None).unwrap().unwrap();
        assert!(!unhashed.hashed);
        assert_eq!(unhashed.key.hash, *blake3::hash(b"content").as_bytes());
        assert!(inspect(&venv, &venv.join("missing"), None).is_err());
    }

    #[test]
    fn candidates_are_grouped_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let venv = fs_err::canonicalize(dir.path()).unwrap();
        let mut files = Vec::new();
        for (name, content) in [("a", "x"), ("b", "y"), ("c", "x")] {
            let path = venv.join(name);
            fs_err::write(&path, content).unwrap();
            files.push(inspect(&venv, &path, None).unwrap().unwrap());
        }
        let groups = group_by_content(files);
        let mut names: Vec<Vec<String>> = groups
            .values()
            .map(|files| {
                files
                    .iter()
                    .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
                    .collect()
            })
            .collect();
        names.sort();
        assert_eq!(names, [vec!["a", "c"], vec!["b"]]);
    }
}
